"""Per-label calibration of a model's probabilities: fit on a labelled split, save as JSON, apply at classify time.

A model's classify probability is its raw yes-token likelihood p. Calibration maps its log-odds z = log(p / (1 - p)):
  temperature:  sigmoid(z / T)       one parameter per label, T > 0 (Guo et al. 2017); keeps every ranking (AUROC)
  platt:        sigmoid(a * z + b)   two parameters per label (Platt 1999); keeps rankings when a > 0
fitted per label by minimising the negative log-likelihood of the truth (scipy). A label with fewer than
`min_positives` positives (or negatives) on the fitting split is not fitted: it stays as it is (identity), marked
with the reason. `cxrlm calibrate` writes the result next to the model as `calibration.json`; `load_model` picks
it up from there.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrlm.errors import InputError, ModelLoadError

FILE_NAME = "calibration.json"
FORMAT = "cxrlm-calibration/1"
METHODS = ("temperature", "platt")
MIN_POSITIVES = 10
MAX_FILE_BYTES = 1_000_000  # a calibration file is a few kB: anything larger is not one
EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before taking log-odds
PARAMETERS = {"temperature": ("temperature",), "platt": ("a", "b")}


@dataclass
class Calibration:
    method: str
    labels: dict[str, dict]  # name -> {"fitted": bool, parameters..., "n", "n_positive", "reason"?}
    fitted_on: dict = field(default_factory=dict)  # manifest, sha256, split, datasets, n_items, date, model
    source: str | None = None  # the file it was read from

    def apply(self, probabilities: dict[str, float]) -> dict[str, float]:
        """Calibrated probabilities; names not fitted (or unknown to the file) keep their value."""
        return {name: self.apply_one(name, p) for name, p in probabilities.items()}

    def apply_one(self, name: str, p: float) -> float:
        entry = self.labels.get(name)
        if not entry or not entry.get("fitted"):
            return p
        z = _logit(np.asarray(p, dtype=float))
        if self.method == "temperature":
            return float(_sigmoid(z / entry["temperature"]))
        return float(_sigmoid(entry["a"] * z + entry["b"]))

    @property
    def fitted_where(self) -> str:
        """'nih14 val': the datasets and split it was fitted on."""
        return " ".join(filter(None, (",".join(self.fitted_on.get("datasets", [])), self.fitted_on.get("split"))))

    @property
    def summary(self) -> str:
        """'temperature, nih14 val': the method and what it was fitted on, for people."""
        return f"{self.method}, {self.fitted_where}" if self.fitted_where else self.method

    def output_field(self, raw: dict[str, float]) -> dict:
        """ModelOutput.calibration: what was applied, and the probabilities before it."""
        return {"method": self.method, "source": self.source, "fitted_on": self.summary, "raw_probabilities": raw}

    def to_dict(self) -> dict:
        return {"format": FORMAT, "method": self.method, "fitted_on": self.fitted_on, "labels": self.labels}


# ---------------------------------------------------------------- fitting


def fit_label(truth: np.ndarray, prob: np.ndarray, method: str) -> dict[str, float]:
    """The parameters of one label minimising the negative log-likelihood of `truth` (0/1) given `prob`."""
    from scipy.optimize import minimize, minimize_scalar

    z, y = _logit(prob), truth.astype(float)
    if method == "temperature":
        # search log T so T stays positive; bounds T in [0.01, 100], far beyond any useful value
        best = minimize_scalar(lambda log_t: _nll(z / math.exp(log_t), y), bounds=(-4.6, 4.6), method="bounded")
        return {"temperature": round(math.exp(best.x), 6)}
    best = minimize(lambda ab: _nll(ab[0] * z + ab[1], y), x0=np.array([1.0, 0.0]), method="L-BFGS-B")
    return {"a": round(float(best.x[0]), 6), "b": round(float(best.x[1]), 6)}


def fit(
    truth: np.ndarray, prob: np.ndarray, names: list[str], method: str = "temperature",
    min_positives: int = MIN_POSITIVES,
) -> Calibration:
    """Fit each column of (items, labels) truth (1, 0 or NaN) and raw probabilities; NaN truth is skipped."""
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}: use {' or '.join(METHODS)}")
    labels = {}
    for j, name in enumerate(names):
        known = ~np.isnan(truth[:, j]) & ~np.isnan(prob[:, j])
        y, p = truth[known, j], prob[known, j]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        entry = {"n": int(known.sum()), "n_positive": n_pos}
        if min(n_pos, n_neg) < min_positives:
            few = f"too few positives: n={n_pos}" if n_pos < min_positives else f"too few negatives: n={n_neg}"
            labels[name] = {"fitted": False, **entry, "reason": f"{few} (fewer than {min_positives}): left as is"}
        else:
            labels[name] = {"fitted": True, **fit_label(y, p, method), **entry}
    return Calibration(method, labels)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of log-odds z against 0/1 truth y, in a form that does not overflow."""
    return float(np.mean(np.logaddexp(0, z) - y * z))


# ---------------------------------------------------------------- the file


def save(calibration: Calibration, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.to_dict(), indent=2) + "\n", encoding="utf-8")


def load(path: Path) -> Calibration:
    """Read and check a calibration file; a bad one is a one-line ModelLoadError."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"calibration file {path} does not exist: make one with `cxrlm calibrate`")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ModelLoadError(f"{path} is larger than {MAX_FILE_BYTES} bytes: not a calibration file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelLoadError(f"{path} is not valid JSON: remake it with `cxrlm calibrate`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("method") not in METHODS:
        raise ModelLoadError(f"{path} is not a {FORMAT} file with method {' or '.join(METHODS)}: remake it")
    labels = data.get("labels")
    if not isinstance(labels, dict) or not all(_valid_entry(data["method"], e) for e in labels.values()):
        raise ModelLoadError(f"{path} has a label without finite parameters (temperature > 0): remake it")
    return Calibration(data["method"], labels, data.get("fitted_on") or {}, source=str(path))


def _valid_entry(method: str, entry) -> bool:
    if not isinstance(entry, dict):
        return False
    if not entry.get("fitted"):
        return True
    values = [entry.get(k) for k in PARAMETERS[method]]
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        return False
    return method != "temperature" or values[0] > 0


def find(model_dir: Path | None, explicit: str | None) -> Calibration | None:
    """The calibration a model uses: `explicit` (a path, or "none" for raw probabilities), else the model folder's."""
    if explicit is not None:
        return None if explicit.lower() == "none" else load(Path(explicit))
    if model_dir is not None and (Path(model_dir) / FILE_NAME).is_file():
        return load(Path(model_dir) / FILE_NAME)
    return None


def provenance(manifest: Path, split: str | None, records: list, model_name: str) -> dict:
    """What a calibration was fitted on, for the file's `fitted_on`."""
    return {
        "model": model_name,
        "manifest": str(Path(manifest).resolve()),
        "manifest_sha256": hashlib.sha256(Path(manifest).read_bytes()).hexdigest(),
        "split": split or "all",
        "datasets": sorted({r.dataset for r in records}),
        "n_items": len(records),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
