#!/usr/bin/env bash
# Create .venv and install cxrlm with its test tools. Safe to re-run: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
# torch first, pinned: on the project's machines these two lie on local disk (see docs/INSTALL.md).
python -c "import torch, torchvision" 2>/dev/null || \
  python -m pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored" || true
python -m pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
python -c "import cxrlm, torch, transformers; print(f'cxrlm ready: torch {torch.__version__}, transformers {transformers.__version__}')"
