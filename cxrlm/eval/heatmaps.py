"""`cxrlm eval heatmaps`: do a model's heatmaps (cxrlm.heatmaps) depend on what it learned, and on where the finding is?

Two checks, on real images:

1. Model randomization (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018). A map that explains the
   model must change when the model's weights are replaced by random ones. The weights are randomized in cascade
   from the top: first the language model (and its head), then the vision tower too. Each image's map for one
   label (the trained model's most probable) is compared with the randomized models' maps for the same label by
   Spearman rank correlation. Two references: the trained map against itself computed again (1 unless the
   computation is nondeterministic), and against the trained map of another image (what any map of this model
   shares, such as a border or a centre bias). A map passes when the randomized correlations fall well under 1.
2. Box mass. For each reader's box, the share of the map inside the box against a uniform map's share (the box's
   area fraction). A box of a finding (the NIH boxes) is explained by its label's classify map; a box of anything
   else (the COVID-19 collection's lung boxes) by the map of the model's own grounding answer for that phrase.
   More mass than the box's area means the map favours the box.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from cxrlm import heatmaps
from cxrlm.metrics.bootstrap import bootstrap_ci, mean
from cxrlm.pathologies import canonical_name
from cxrlm.types import Study, Task

STAGES = ("language model", "all weights")  # the cascade, from the top


@dataclass
class BoxItem:
    study: Study
    label: str  # a CheXpert or NIH name (classify), or a phrase to ground
    xyxy: tuple[float, float, float, float]  # pixels of the image
    task: Task = Task.CLASSIFY


def randomized(model, stage: str, seed: int = 0):
    """A copy of `model` (hf engine) with its language model, or all its weights, re-initialized at random."""
    from cxrlm.engines.hf import HFEngine
    from cxrlm.models.base import CxrModel

    import torch

    trained = model.engine.model
    torch.manual_seed(seed)
    fresh = type(trained)(trained.config).to(trained.device, trained.dtype).eval()
    if stage == STAGES[0]:  # keep the vision tower (and Qwen's merger inside it, or a separate projector)
        keep = {k: v for k, v in trained.state_dict().items() if not _in_language_model(k, model)}
        fresh.load_state_dict(keep, strict=False)
    elif stage != STAGES[1]:
        raise ValueError(f"unknown randomization stage {stage!r}; use one of {', '.join(STAGES)}")
    engine = HFEngine(fresh, model.engine.processor, model.engine.device)
    return CxrModel(f"{model.name} ({stage} randomized)", copy.copy(model.profile), engine)


def _in_language_model(key: str, model) -> bool:
    return key.startswith(model.adapter.language_model + ".") or key.startswith("lm_head.")


def label_map(model, study: Study, label: str, method: str) -> np.ndarray:
    return model.heatmap(study, Task.CLASSIFY, label, method=method)


def randomization_test(model, studies: list[Study], method: str = "gradient", seed: int = 0) -> dict:
    """Rank correlations of each image's trained map with the randomized models' maps (see the module doc)."""
    cascade = [randomized(model, stage, seed) for stage in STAGES]
    rows = []
    trained_maps = []
    for study in studies:
        probs = model.predict(study, Task.CLASSIFY).probabilities
        label = max(probs, key=probs.get)
        trained = label_map(model, study, label, method)
        again = label_map(model, study, label, method)
        row = {"label": label, "trained_again": heatmaps.rank_correlation(trained, again)}
        for stage, random_model in zip(STAGES, cascade, strict=True):
            row[stage] = heatmaps.rank_correlation(trained, label_map(random_model, study, label, method))
        trained_maps.append(trained)
        rows.append(row)
    for i, row in enumerate(rows):  # the next image's trained map, resized to this one's
        other = trained_maps[(i + 1) % len(rows)]
        here = trained_maps[i]
        row["another_image"] = heatmaps.rank_correlation(here, _resized(other, here.shape)) if len(rows) > 1 else None
    keys = ["trained_again", "another_image", *STAGES]
    summary = {k: _interval([r[k] for r in rows if r[k] is not None], seed) for k in keys}
    return {"method": method, "images": len(rows), "spearman": summary, "per_image": rows}


def box_mass(model, items: list[BoxItem], method: str = "gradient", seed: int = 0) -> dict:
    """Each box's share of its label's map against the box's area fraction, per finding and overall. A ground item
    whose phrase gets no box from the model is left out (counted in `no_box`)."""
    rows, no_box = [], 0
    for item in items:
        if item.task == Task.GROUND:
            label = item.label
            out = model.predict(item.study, Task.GROUND, phrase=label)
            if not out.boxes:
                no_box += 1
                continue
            heat = model.heatmap(item.study, Task.GROUND, label, out.raw_text, method)
        else:
            label = canonical_name(item.label)
            heat = label_map(model, item.study, label, method)
        area = heatmaps.area_fraction(item.study.images[0].size, item.xyxy)
        mass = heatmaps.mass_inside(heat, item.xyxy)
        rows.append({"label": label, "mass": mass, "area": area, "ratio": mass / area if area > 0 else None})
    per_finding = {}
    for label in sorted({r["label"] for r in rows}):
        mine = [r for r in rows if r["label"] == label]
        per_finding[label] = {"boxes": len(mine), "mass": mean([r["mass"] for r in mine]),
                              "uniform": mean([r["area"] for r in mine])}
    overall = {
        "boxes": len(rows),
        "no_box": no_box,
        "mass": _interval([r["mass"] for r in rows], seed),
        "uniform": _interval([r["area"] for r in rows], seed),
        "mass_minus_uniform": _interval([r["mass"] - r["area"] for r in rows], seed),
    }
    return {"method": method, "overall": overall, "per_finding": per_finding, "per_box": rows}


def _interval(values: list[float], seed: int) -> dict:
    if not values:
        return {"mean": None, "ci": None, "n": 0}
    ci = bootstrap_ci(mean, values, seed=seed)
    return {"mean": round(ci.value, 4), "ci": [round(ci.ci_low, 4), round(ci.ci_high, 4)], "n": len(values)}


def _resized(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if heat.shape == shape:
        return heat
    return heatmaps.to_original(heat, (shape[1], shape[0]))
