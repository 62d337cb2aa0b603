"""Where the tests find real vLLM: its own virtual environment (vLLM pins its torch and transformers).

$CXRLM_VLLM_PYTHON names that environment's python (CI exports it after scripts/setup_vllm_cpu.sh); else the
repository's .venv-vllm, else this interpreter. Tests that need vLLM skip, with the reason, only where that python
cannot import vllm and cxrlm.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / ".venv-vllm" / "bin" / "python"
VLLM_PYTHON = os.environ.get("CXRLM_VLLM_PYTHON") or (str(LOCAL) if LOCAL.is_file() else sys.executable)
# One thread per vLLM process on the 2-core CI machine, no hub, no core pinning (the machine is shared).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
       "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(REPO)}


def vllm_missing() -> str | None:
    """Why vLLM cannot run here, or None."""
    probe = subprocess.run([VLLM_PYTHON, "-c", "import vllm, cxrlm"], capture_output=True, text=True, env=ENV,
                           check=False)
    if probe.returncode:
        lines = probe.stderr.strip().splitlines() or ["no output"]
        return (f"vLLM not importable by {VLLM_PYTHON}: {lines[-1]} (run scripts/setup_vllm_cpu.sh, or set "
                "CXRLM_VLLM_PYTHON; docs/ENGINES.md)")
    return None


MISSING = vllm_missing()
needs_vllm = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
