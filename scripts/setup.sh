#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with everything the codec,
# the app and the tests need. Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
$VPY -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first, pinned: this CPU wheel is available locally; an unpinned torch would pull a
# multi-GB CUDA build. On a GPU machine set TORCH_SPEC (e.g. "torch>=2.8") to keep its build.
if ! $VPY -c "import torch" >/dev/null 2>&1; then
  $VPY -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
$VPY -m pip install -q -r requirements.txt -r requirements-dev.txt
echo "setup done: $($VPY -c 'import torch, diffusers, peft; print("torch", torch.__version__, "diffusers", diffusers.__version__, "peft", peft.__version__)')"
