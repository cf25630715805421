#!/usr/bin/env bash
# The test command (README): set up if needed, then the whole suite on the CPU with the tiny backbone, in one
# pytest process. (The browser tests once hung in it: an AV1 baseline had left the main thread at real-time
# priority, inherited by chromium; video._thread_scheduling_kept fixes it and tests/conftest.py checks it.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest -q "$@"
