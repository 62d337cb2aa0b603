"""A counterbalanced reader-study design as data: which reader reads which case under which condition, in what order.

N readers, C cases, K conditions. The cases are shuffled once (seeded) and cut into K blocks of C/K cases; reader r
reads block b under condition (b + r) mod K, a Latin-square rotation. So every reader reads every case exactly once,
C/K cases under each condition, and over any K consecutive readers every case is read under every condition once.
With N a multiple of K each case is read under each condition by exactly N/K readers; otherwise the balance is only
approximate (`design_warnings` says so). Each reader's cases come in their own random order (all conditions
interleaved), drawn from the seed, so order and learning effects spread evenly over the conditions.

Teaching mode is the one-condition case: every reader reads every case under 'teaching'.
Pure functions: the same arguments give the same design, which is how the recorded seed reproduces a study.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cxrlm.errors import ConfigError

READER_CONDITIONS = ("manual", "labels", "reasoning")  # no AI; AI labels with probabilities; full reasoning and report
TEACHING = "teaching"  # read first, then the model's output and the truth are revealed
MODES = ("reader", "teaching")
MAX_READERS = 200


@dataclass(frozen=True)
class Assignment:
    reader: int  # 0-based reader index (the store names readers R01, R02, ...)
    case: str  # the manifest's case id
    condition: str
    position: int  # 1-based place in this reader's reading order


def parse_conditions(text: str, mode: str = "reader") -> tuple[str, ...]:
    """'manual,labels,reasoning' -> a tuple of known, distinct conditions (teaching mode: always ('teaching',))."""
    if mode not in MODES:
        raise ConfigError(f"unknown study mode {mode!r}: choose reader or teaching")
    if mode == "teaching":
        return (TEACHING,)
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in READER_CONDITIONS]
    if unknown or not names:
        raise ConfigError(f"unknown condition(s) {', '.join(unknown) or '(none)'}: choose from "
                          f"{', '.join(READER_CONDITIONS)}, comma-separated")
    if len(set(names)) != len(names):
        raise ConfigError(f"condition listed twice in {text!r}: name each once")
    return names


def check_design(n_readers: int, n_cases: int, conditions: tuple[str, ...]) -> list[str]:
    """Refuse a design that cannot be balanced (ConfigError); return warnings for one that is only approximately so."""
    k = len(conditions)
    if not 1 <= n_readers <= MAX_READERS:
        raise ConfigError(f"--readers must be between 1 and {MAX_READERS}, got {n_readers}")
    if n_cases < k:
        raise ConfigError(f"{n_cases} case(s) for {k} conditions: give at least one case per condition")
    if n_cases % k:
        extra = n_cases % k
        raise ConfigError(f"{n_cases} cases do not split evenly over {k} conditions: drop {extra} case(s) or add "
                          f"{k - extra}, so that every reader reads {k} equal blocks")
    warnings = []
    if n_readers % k:
        warnings.append(f"{n_readers} readers is not a multiple of {k} conditions: some cases are read under one "
                        f"condition more often than another (use {n_readers + k - n_readers % k} readers to balance)")
    return warnings


def make_design(n_readers: int, case_ids: list[str], conditions: tuple[str, ...], seed: int) -> list[Assignment]:
    """Every (reader, case) once, condition by Latin-square rotation of seeded case blocks, order shuffled per
    reader. Sorted by reader, then position."""
    check_design(n_readers, len(case_ids), conditions)
    if len(set(case_ids)) != len(case_ids):
        raise ConfigError("case ids repeat: give every case its own id")
    k = len(conditions)
    shuffled = list(case_ids)
    random.Random(f"{seed}:blocks").shuffle(shuffled)
    size = len(shuffled) // k
    block_of = {case: i // size for i, case in enumerate(shuffled)}
    design = []
    for reader in range(n_readers):
        order = list(case_ids)
        random.Random(f"{seed}:reader:{reader}").shuffle(order)
        design += [Assignment(reader, case, conditions[(block_of[case] + reader) % k], position)
                   for position, case in enumerate(order, start=1)]
    return design
