#!/usr/bin/env bash
# Create .venv and install ttq-workbook with its test tools (pip; see environment.yml for conda).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# torch and torchvision first, pinned: the versions this project is tested with
"$venv/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$venv/bin/python" -m pip install -q -e ".[dev]"
echo "ttq-workbook installed in $venv (activate with: . $venv/bin/activate)"
# the browser test drives a system Chromium (Playwright's own browser download is not used)
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 && [ -z "${TTQ_CHROMIUM:-}" ]; then
  echo "note: no Chromium: tests/test_browser.py will skip (Debian: apt-get install chromium; or set TTQ_CHROMIUM)"
fi
