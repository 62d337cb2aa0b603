"""Every engine implements cxrlm.engines.base.Engine and declares its capabilities; callers read them as data."""

import pytest
from scripted_engine import ScriptedEngine

from cxrlm.engines.base import Engine, EngineCapabilities
from cxrlm.engines.remote import RemoteEngine
from cxrlm.models.base import CxrModel
from cxrlm.models.profiles import PROFILES


def test_the_protocol_refuses_an_engine_that_declares_nothing():
    class Undeclared(ScriptedEngine):  # every method, but no capabilities: callers could not tell what it can do
        def __init__(self):
            pass

    class Textless:  # capabilities, but no way to generate
        capabilities = EngineCapabilities()

    assert isinstance(ScriptedEngine("x"), Engine)
    assert not isinstance(Undeclared(), Engine) and not isinstance(Textless(), Engine)


def test_hf_and_fast_declare_what_they_can_do(tiny_model):
    from cxrlm.engines.fast import FastEngine
    from cxrlm.engines.hf import HFEngine

    hf = tiny_model.engine
    assert isinstance(hf, HFEngine) and isinstance(hf, Engine)
    # The tiny tokenizer (Qwen2's) writes one digit per token, so both decode expected-value numbers.
    assert hf.capabilities == EngineCapabilities(concurrent=False, mean_numbers=True, heatmaps=True)
    fast = FastEngine(hf.model, hf.processor, "cpu", max_batch=1, max_len=64, pack_weights=False)  # the shared model
    try:
        assert isinstance(fast, Engine)
        assert fast.capabilities == EngineCapabilities(concurrent=True, mean_numbers=True)
    finally:
        fast.close()
    lengths = [len(hf.processor.tokenizer.encode(text, add_special_tokens=False)) for text in ("Right lung.", "Left")]
    assert hf.count_tokens(["Right lung.", "Left"]) == sum(lengths) > 0
    assert hf.counter is not hf.processor.tokenizer  # its own copy: never shared with a running generation


def test_a_tokenizer_that_merges_digits_declares_no_mean_numbers():
    from types import SimpleNamespace

    from cxrlm.engines.hf import HFEngine

    class Merging:  # "01", "23", ...: five tokens for ten digits
        def encode(self, text, add_special_tokens=False):
            return [0, 1, 2, 3, 4]

        def decode(self, ids):
            return "01"

    engine = HFEngine(model=None, processor=SimpleNamespace(tokenizer=Merging()), device="cpu")
    assert engine.capabilities == EngineCapabilities(concurrent=False, mean_numbers=False, heatmaps=True)
    with pytest.raises(NotImplementedError, match="capabilities.mean_numbers"):
        engine.generate_mean_numbers([], [], 4)


def test_remote_declares_no_mean_numbers_and_refuses_them():
    remote = RemoteEngine("http://127.0.0.1:9/v1", model_name="m")  # not contacted: the model is named
    assert isinstance(remote, Engine)
    assert remote.capabilities == EngineCapabilities(concurrent=True, mean_numbers=False)
    assert remote.count_tokens(["Right lung."]) is None
    with pytest.raises(NotImplementedError, match="capabilities.mean_numbers"):
        remote.generate_mean_numbers([], [], 4)


def test_predict_batch_runs_in_threads_only_on_a_concurrent_engine(xray):
    import threading

    class Recording(ScriptedEngine):
        def generate(self, *args, **kwargs):
            self.threads.add(threading.get_ident())
            return super().generate(*args, **kwargs)

    for concurrent in (False, True):
        engine = Recording("<answer>Edema</answer>")
        engine.capabilities = EngineCapabilities(concurrent=concurrent)
        engine.threads = set()
        CxrModel("scripted", PROFILES["nv-reason-cxr"], engine).predict_batch([xray] * 4, "reason")
        assert (threading.get_ident() in engine.threads) is not concurrent


PROBES = ("getattr", "hasattr")


def test_no_caller_probes_an_engine_for_attributes():
    """Outside cxrlm/engines/, nothing asks `getattr(... engine ..., ...)` / `hasattr`: the contract says what an
    engine has, and `engine.capabilities` says what it can do."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "cxrlm"
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.parent.name == "engines":  # engines read foreign model configs with getattr; that is not probing
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            probe = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in PROBES
            if probe and node.args and "engine" in ast.unparse(node.args[0]).split(".")[-1]:
                found.append(f"{path.relative_to(package.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "engine probed for attributes (declare it in cxrlm.engines.base.Engine): " + "; ".join(found)
