"""Optional radeval metrics: skipped with a reason when absent, never downloading, environment restored."""

import os
import sys
import types

import pytest

from cxrlm.metrics import model_based as MB


def test_unknown_metric_is_an_error():
    with pytest.raises(ValueError, match="unknown model-based metric"):
        MB.model_based_metrics(["a"], ["a"], names=("bleurt",))


def test_skipped_without_radeval(monkeypatch):
    monkeypatch.setitem(sys.modules, "RadEval", None)  # import fails as if not installed
    values, notes = MB.model_based_metrics(["no effusion"], ["no effusion"])
    assert values == {} and "radeval package is not installed" in notes[0]


def test_each_metric_runs_offline_and_missing_weights_skip_only_itself(monkeypatch):
    seen = []

    class FakeRadEval:
        def __init__(self, **flags):
            self.flags = flags

        def __call__(self, refs, hyps):
            seen.append(os.environ.get("HF_HUB_OFFLINE"))
            if "do_green" in self.flags:
                raise OSError("We couldn't connect to 'https://huggingface.co' to load the weights")
            return (
                {"bertscore": 0.5, "label": "not a number"}
                if "do_bertscore" in self.flags
                else {"radgraph_simple": 0.25}
            )

    monkeypatch.setitem(sys.modules, "RadEval", types.SimpleNamespace(RadEval=FakeRadEval))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    values, notes = MB.model_based_metrics(["a"], ["b"], names=("bertscore", "radgraph", "green"))
    assert values == {"bertscore:bertscore": 0.5, "radgraph:radgraph_simple": 0.25}
    assert len(notes) == 1 and notes[0].startswith("green skipped") and "connect" in notes[0]
    assert seen == ["1", "1", "1"] and "HF_HUB_OFFLINE" not in os.environ
