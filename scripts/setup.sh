#!/usr/bin/env bash
# Create .venv and install cxrlm with everything the tests need. Safe to re-run: it only installs what is missing.
# pip's output goes to .venv/setup.log and is shown only if an install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
log=.venv/setup.log
pip_install() {
  if ! .venv/bin/python -m pip install -q "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "setup failed while installing: $* (full log: $log)" >&2
    exit 1
  fi
}
: >"$log"
pip_install --upgrade pip
# torch first, pinned: on the project's machines these two lie on local disk (a CUDA build, used on the CPU here).
.venv/bin/python -c "import torch, torchvision" 2>/dev/null || pip_install torch==2.14.1 torchvision==0.29.1
pip_install -e ".[dev]"
.venv/bin/python -c "import torch, transformers; print(f'cxrlm ready: torch {torch.__version__}, transformers {transformers.__version__}')"
