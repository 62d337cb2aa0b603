"""Optional model-based report metrics (BERTScore, RadGraph F1, CheXbert F1, GREEN) through the `radeval` package.

They run only when `radeval` is importable AND its model weights are already on disk: the Hugging Face hub is
forced offline while they run, so nothing is ever downloaded; a metric whose weights are missing is skipped
with a note that says so. cxrlm does not install radeval (it pulls large models); `pip install radeval` and
fetch its weights yourself to use these.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import contextmanager

# metric name -> the RadEval constructor flag that turns it on
RADEVAL_FLAGS = {
    "bertscore": "do_bertscore",
    "radgraph": "do_radgraph",
    "chexbert": "do_chexbert",
    "green": "do_green",
}
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def model_based_metrics(
    references: Sequence[str], hypotheses: Sequence[str], names: Sequence[str] = tuple(RADEVAL_FLAGS)
) -> tuple[dict[str, float], list[str]]:
    """({metric key: value}, notes). Each metric is tried on its own so one missing model skips only itself."""
    unknown = [n for n in names if n not in RADEVAL_FLAGS]
    if unknown:
        raise ValueError(f"unknown model-based metric(s) {unknown}; choose from {sorted(RADEVAL_FLAGS)}")
    try:
        from RadEval import RadEval
    except ImportError:
        return {}, [f"model-based metrics ({', '.join(names)}) skipped: the radeval package is not installed"]
    values, notes = {}, []
    for name in names:
        try:
            with _offline():
                scores = RadEval(**{RADEVAL_FLAGS[name]: True})(refs=list(references), hyps=list(hypotheses))
        except Exception as err:  # noqa: BLE001 - radeval raises many types when weights are absent: skip it
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            notes.append(f"{name} skipped: its weights are not on disk or it failed offline ({first[:160]})")
            continue
        values.update({f"{name}:{k}": float(v) for k, v in scores.items() if isinstance(v, int | float)})
    return values, notes


@contextmanager
def _offline():
    """Hub offline for the block: the environment for fresh imports, the constant for an imported hub client."""
    saved = {k: os.environ.get(k) for k in _OFFLINE}
    os.environ.update(_OFFLINE)
    hub = sys.modules.get("huggingface_hub.constants")
    saved_hub = getattr(hub, "HF_HUB_OFFLINE", None)
    if hub is not None:
        hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if hub is not None:
            hub.HF_HUB_OFFLINE = saved_hub
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
