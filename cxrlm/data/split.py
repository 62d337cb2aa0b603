"""Train/val/test assignment by patient: a seeded hash, so no patient's images straddle two splits.

The split of a patient depends only on (seed, collection, patient id) - not on record order, not on
which other records are in the manifest - so a subset of a collection (nih14 and nih14-64px are both
NIH ChestX-ray14) puts a shared patient in the same split in both manifests.
"""

from __future__ import annotations

import hashlib

from cxrlm.errors import ConfigError

# Official split names of the sources -> ours.
SOURCE_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
}


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"--val-fraction + --test-fraction must leave some training data, got {val_fraction + test_fraction}"
        )


def patient_unit(key: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, key): the first 8 bytes of SHA-256."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(key: str, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """'test' for the first `test_fraction` of the hash range, then 'val', then 'train'."""
    unit = patient_unit(key, seed)
    if unit < test_fraction:
        return "test"
    if unit < test_fraction + val_fraction:
        return "val"
    return "train"


def source_split(name: str | None) -> str | None:
    """Map a source's split name (validate, valid, ...) to train/val/test; unknown or blank -> None."""
    if not name:
        return None
    return SOURCE_SPLIT_NAMES.get(name.strip().lower())
