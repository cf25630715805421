#!/usr/bin/env bash
# The test command (README): set up if needed, then the whole suite on the CPU with the tiny backbone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest -q "$@"
