"""Linear probes on cxrlm-tiny's frozen tower (cxrlm_tiny.probes): the cross-fitted soft answers, and
`cxrlm eval tower-probe`."""

import numpy as np
import pytest

from cxrlm.cli import main
from cxrlm.data.manifest import ManifestRecord, write_manifest
from cxrlm.pathologies import NIH14
from cxrlm_tiny import probes

pytest.importorskip("sklearn")


def test_cross_fitted_probabilities_rank_a_label_and_skip_rare_or_unknown_items():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    target = (rng.random(300) < 0.3).astype(float)
    features = rng.normal(size=(300, 6))
    features[:, 0] += 1.5 * target
    target[:5] = np.nan
    p = probes.cross_fitted(features, target, seed=0)
    assert np.isnan(p[:5]).all() and not np.isnan(p[5:]).any()
    assert roc_auc_score(target[5:], p[5:]) > 0.8  # the feature alone ranks at 0.87
    rare = np.zeros(300)
    rare[:9] = 1  # fewer than two positives per fold
    assert np.isnan(probes.cross_fitted(features, rare, seed=0)).all()


def _manifest(folder, per_split: int):
    """Images whose "Cardiomegaly" is a bright square, every other NIH label negative."""
    from PIL import Image

    rng, records = np.random.default_rng(0), []
    for i in range(2 * per_split):
        positive = i % 2 == 0
        pixels = rng.integers(0, 80, (64, 64), dtype=np.uint8)
        if positive:
            pixels[16:48, 16:48] = 230
        Image.fromarray(pixels).save(folder / f"{i}.png")
        records.append(ManifestRecord(
            dataset="synthetic", study_id=str(i), patient_id=str(i), image=f"{i}.png", root=str(folder),
            split="train" if i < per_split else "val", width=64, height=64,
            source_labels={name: 0 for name in NIH14} | {"Cardiomegaly": int(positive)}))
    write_manifest(records, folder / "m.jsonl")
    return folder / "m.jsonl"


@pytest.mark.slow
def test_the_tower_probe_reads_a_label_the_tower_sees(tiny_checkpoint, tmp_path, capsys):
    manifest = _manifest(tmp_path, per_split=24)
    assert main(["eval", "tower-probe", str(tiny_checkpoint), str(manifest)]) == 0
    first, labels, share = capsys.readouterr().out.splitlines()
    assert first.startswith("macro AUROC, NIH labels with >= 10 positives: ")
    assert float(first.rsplit(" ", 1)[1]) > 0.9  # a bright square moves even a random tower's mean token
    assert labels.split() == ["Cardiomegaly", labels.split()[1]]  # the only label with 10 positives in val
    assert share.startswith("first_component_share of the probes' scores: ")


def test_the_tower_probe_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "tower-probe", str(tmp_path), str(tmp_path / "m.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path} is not a checkpoint folder (no config.json)"
    (tmp_path / "config.json").write_text("{}")
    assert main(["eval", "tower-probe", str(tmp_path), str(tmp_path / "m.jsonl")]) == 2
    assert "not found; build one with `cxrlm data build nih14 ...`" in capsys.readouterr().err
