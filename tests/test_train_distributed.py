"""The distributed path on CPU: two processes (torchrun, gloo) run SFT steps on the tiny checkpoint as one DDP job.

Slow (two interpreters importing torch and TRL on a small machine) but run by default: it is the only check that
multi-GPU launches (recipes/launch/*.yaml) go through a real process group, shard the data and save once.
"""

import json
import subprocess
import sys

import pytest
from train_samples import write_sft

pytestmark = pytest.mark.slow

RUNNER = """
import sys
from cxrlm.train import sft
from cxrlm.train.config import SFTRecipe, load_recipe
sft.main(load_recipe(None, SFTRecipe, sys.argv[1:]))
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_sft(tiny_checkpoint, tmp_path):
    runner, out = tmp_path / "run_sft.py", tmp_path / "ddp"
    runner.write_text(RUNNER)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               str(runner), f"model={tiny_checkpoint}", f"train_file={write_sft(tmp_path, n=4)}",
               f"output_dir={out}", "max_steps=2", "per_device_train_batch_size=1", "save_steps=1000"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (state,) = out.glob("checkpoint-*/trainer_state.json")
    history = [h for h in json.loads(state.read_text())["log_history"] if "loss" in h]
    # 4 rows, 1 per process per step: with 2 processes, 2 steps are one full epoch (1 process would be half).
    assert [h["epoch"] for h in history] == [0.5, 1.0]
    assert done.stdout.count("step 2/2 loss=") == 1  # only the main process prints
    assert (out / "model.safetensors").is_file()
