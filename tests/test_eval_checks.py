"""`cxrlm eval reasoning` and `cxrlm eval rewards` (cxrlm/cli/checks.py) on a tiny random checkpoint."""

import json
import math

import numpy as np
import pytest
from train_samples import write_grpo

from cxrlm.cli import main
from cxrlm.data.manifest import ManifestRecord, write_manifest

pytestmark = pytest.mark.slow


def test_reasoning_counts_answers_and_keeps_the_first_failures(tiny_checkpoint, tmp_path, capsys):
    from PIL import Image

    rng, records = np.random.default_rng(0), []
    for i, split in enumerate(["train", "val", "val"]):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        records.append(ManifestRecord("synthetic", str(i), str(i), image=f"{i}.png", root=str(tmp_path), split=split,
                                      labels={"Cardiomegaly": 1}))
    write_manifest(records, tmp_path / "m.jsonl")
    out = tmp_path / "r.json"
    argv = ["eval", "reasoning", "--model", str(tiny_checkpoint), "--manifest", str(tmp_path / "m.jsonl"),
            "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert result["n"] == 2 and 0 <= result["parsed"] <= 2  # the val split only
    assert len(result["failures"]) == 2 - result["parsed"]
    assert all(f["raw_text"] is not None for f in result["failures"])


def test_rewards_prints_the_mean_of_each_reward(tiny_checkpoint, tmp_path, capsys):
    argv = ["eval", "rewards", "--model", str(tiny_checkpoint), "--data", str(write_grpo(tmp_path, n=2)),
            "--rewards", "format,length", "--samples", "2", "--max-new-tokens", "4"]
    assert main(argv) == 0
    means = json.loads(capsys.readouterr().out)
    assert set(means) == {"format", "length"} and all(math.isfinite(v) for v in means.values())


def test_a_missing_manifest_is_a_one_line_error(tmp_path, capsys):
    assert main(["eval", "reasoning", "--manifest", str(tmp_path / "none.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
