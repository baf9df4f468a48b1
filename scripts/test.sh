#!/usr/bin/env bash
# The whole test suite: library tests and the five notebooks under nbval, in fast mode.
# Real-data tests run when TTQ_DATA_TGZ / TTQ_PRETRAINED_DIR point at ../shared (see README); else they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
export TTQ_FAST=1
"$venv/bin/python" -m pytest tests/ notebooks/ --nbval-lax --nbval-current-env -p no:cacheprovider "$@"
