#!/usr/bin/env bash
# The whole test suite: library tests and every notebook under nbval, in fast mode.
# Real-data tests run when TTQ_DATA_TGZ / TTQ_PRETRAINED_DIR point at ../shared (see README); else they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
export TTQ_FAST=1
# notebooks run from notebooks/: make relative data paths absolute first
for var in TTQ_DATA_TGZ TTQ_PRETRAINED_DIR TTQ_DATA; do
  value=${!var:-}
  if [ -n "$value" ] && [ -e "$value" ]; then export "$var=$(cd "$(dirname "$value")" && pwd)/$(basename "$value")"; fi
done
"$venv/bin/python" -m pytest tests/ notebooks/ --nbval-lax --nbval-current-env -p no:cacheprovider "$@"
