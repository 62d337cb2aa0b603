"""VQA answer accuracy and the bootstrap: hand cases, determinism, coverage and failure modes."""

import math

import numpy as np
import pytest

from cxrlm.metrics import bootstrap as BS
from cxrlm.metrics import labels as L
from cxrlm.metrics import vqa as V


@pytest.mark.parametrize(
    ("reference", "prediction", "match"),
    [
        ("yes", "Yes.", True),
        ("yes", "Present", True),
        ("no", "No, there is no pleural effusion.", True),
        ("no", "Not present.", True),
        ("no", "yes", False),
        ("no", "There is no effusion.", False),  # polarity is read from the leading words only
        ("left lower lobe", "The left lower lobe.", True),
        ("left lower lobe", "right lower lobe", False),
        ("pleural effusion", "", False),
    ],
)
def test_normalized_match(reference, prediction, match):
    assert V.answer_matches(reference, prediction) is match


def test_accuracies_hand_computed():
    refs, preds = ["yes", "no", "Edema"], ["yes", "No.", "edema"]
    assert V.exact_match(refs, preds) == pytest.approx(1 / 3)
    assert V.normalized_accuracy(refs, preds) == 1.0
    assert V.normalize_answer("The  Heart!") == "heart"
    assert math.isnan(V.exact_match([], []))
    with pytest.raises(ValueError, match="pair up"):
        V.normalized_accuracy(["yes"], [])


def test_bootstrap_is_seeded_and_brackets_the_value():
    values = np.random.default_rng(0).normal(0.6, 0.2, 300)
    a = BS.bootstrap_ci(BS.mean, values, seed=1)
    assert a == BS.bootstrap_ci(BS.mean, values, seed=1)
    assert a != BS.bootstrap_ci(BS.mean, values, seed=2)
    assert a.ci_low < a.value < a.ci_high and a.n == 300 and a.n_valid == 1000
    # the bootstrap interval of a mean is close to the normal one: 1.96 standard errors each side
    se = values.std() / math.sqrt(len(values))
    assert (a.ci_high - a.ci_low) / (2 * 1.96 * se) == pytest.approx(1.0, abs=0.1)


def test_bootstrap_ci_of_constant_is_a_point_and_lists_work():
    out = BS.bootstrap_ci(lambda xs: sum(xs) / len(xs), [0.5] * 20, n_resamples=50)
    assert (out.value, out.ci_low, out.ci_high) == (0.5, 0.5, 0.5)


def test_bootstrap_drops_undefined_resamples():
    y = np.array([1] + [0] * 19, dtype=float)
    s = np.linspace(0, 1, 20)
    out = BS.bootstrap_ci(L.auroc, y, s, n_resamples=200)
    assert 0 < out.n_valid < 200  # resamples without the one positive have no AUROC
    assert out.to_dict()["value"] == 0.0


def test_bootstrap_failure_modes():
    with pytest.raises(ValueError, match="different lengths"):
        BS.bootstrap_ci(L.auroc, [1, 0], [0.5])
    empty = BS.bootstrap_ci(BS.mean, [])
    assert empty.n == 0 and empty.to_dict()["value"] is None


def test_paired_bootstrap_identical_and_clearly_different_systems():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    same = BS.paired_bootstrap(BS.mean, (a,), (a,))
    assert same.delta == 0 and same.p_value == 1.0 and not same.a_better
    better = BS.paired_bootstrap(BS.mean, (a + 0.1,), (a,))
    assert better.delta == pytest.approx(0.1) and better.ci_low == pytest.approx(0.1) and better.a_better
    noisy = BS.paired_bootstrap(BS.mean, (a + rng.normal(0.3, 0.2, 200),), (a,))
    assert noisy.p_value < 0.01 and noisy.a_better
    worse = BS.paired_bootstrap(BS.mean, (a,), (a + rng.normal(0.3, 0.2, 200),))
    assert worse.ci_high < 0 and worse.p_value < 0.01 and not worse.a_better


def test_paired_bootstrap_no_difference_gives_large_p():
    rng = np.random.default_rng(1)
    truth = (rng.random(150) < 0.4).astype(float)
    a, b = rng.random(150), rng.random(150)  # two uninformative scorers
    out = BS.paired_bootstrap(L.auroc, (truth, a), (truth, b), n_resamples=300)
    assert out.p_value > 0.05 and out.ci_low < 0 < out.ci_high
