"""--engine vllm against the hf engine on the shipped cxrlm-tiny, with real vLLM (the CPU build here).

vLLM pins its own torch and transformers, so it lives in its own virtual environment (docs/ENGINES.md): these tests
run it through that environment's python (tests/vllm_env.py: $CXRLM_VLLM_PYTHON, else .venv-vllm) and skip with the
reason where it cannot import vllm. cxrlm-tiny's hf side runs in this interpreter, the reference; the per-family
parity runs both engines in vLLM's environment (tests/vllm_parity.py), so both see the same image processor.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from vllm_env import ENV, MISSING, VLLM_PYTHON, needs_vllm

from cxrlm.models import DEFAULT_MODEL_DIR

PARITY = Path(__file__).with_name("vllm_parity.py")
# Families vLLM implements, by cxrlm.models.families name (REMOTE_CODE's checkpoints are not among them).
VLLM_FAMILIES = ("qwen2_5_vl", "qwen3_vl", "llava_onevision", "gemma3")


def cxrlm(python: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "cxrlm", *args], capture_output=True, text=True, env=ENV, timeout=900,
                          check=False)


def answer(stdout: str) -> str:
    """The report without its timing line, the one part that differs between engines."""
    return "\n".join(line for line in stdout.splitlines() if not line.startswith("("))


@pytest.fixture(scope="module")
def image(fixture_pngs) -> Path:
    if not fixture_pngs:
        pytest.skip("no sample images in ../shared/data")
    return fixture_pngs[0]


@needs_vllm
def test_report_is_the_hf_engines_greedy_answer(image):
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        pytest.skip("weights/cxrlm-tiny is not installed")
    hf = cxrlm(sys.executable, "report", str(image), "--engine", "hf", "--model", str(DEFAULT_MODEL_DIR))
    vllm = cxrlm(VLLM_PYTHON, "report", str(image), "--engine", "vllm", "--model", str(DEFAULT_MODEL_DIR))
    assert hf.returncode == 0, hf.stderr[-2000:]
    assert vllm.returncode == 0, vllm.stderr[-2000:]
    assert "Findings" in hf.stdout  # a real report, not an empty answer on both sides
    assert answer(vllm.stdout) == answer(hf.stdout)


@needs_vllm
def test_yes_probabilities_match_hf(image):
    """classify's yes/no shares from vLLM's top log-probabilities, against hf's full softmax, same process."""
    script = (
        "import sys; from PIL import Image; from cxrlm.models import load_model\n"
        "img = Image.open(sys.argv[1]).convert('RGB')\n"
        "convs = [[{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': q}]}]\n"
        "         for q in ('Is there pneumonia? Answer yes or no.', 'Is there cardiomegaly? Answer yes or no.')]\n"
        "for engine in ('hf', 'vllm'):\n"
        "    m = load_model(sys.argv[2], device='cpu', engine=engine)\n"
        "    print(engine, *m.engine.yes_probability(convs, [[img], [img]]))\n"
    )
    run = subprocess.run([VLLM_PYTHON, "-c", script, str(image), str(DEFAULT_MODEL_DIR)], capture_output=True,
                         text=True, env=ENV, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in run.stdout.splitlines()
            if line.split()[:1] in (["hf"], ["vllm"])}
    assert len(rows["vllm"]) == 2
    assert all(abs(p - 0.5) > 0.05 for p in rows["hf"])  # a real view on both labels, not the no-view fallback
    assert rows["vllm"] == pytest.approx(rows["hf"], abs=2e-3)


@needs_vllm
@pytest.mark.parametrize("family", VLLM_FAMILIES)
def test_every_family_gives_hf_engines_answers(family, image, tmp_path):
    """A tiny random checkpoint of each family vLLM implements: greedy text equal, yes-probabilities close."""
    run = subprocess.run([VLLM_PYTHON, str(PARITY), family, str(tmp_path), str(image)], capture_output=True, text=True,
                         env=ENV, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {row["engine"]: row for row in map(json.loads, run.stdout.splitlines()[-2:])}
    hf, vllm = rows["hf"], rows["vllm"]
    if family != "gemma3":  # random Gemma 3 wrote only newlines at every weight scale tried (0.02 to 3)
        assert len(set(hf["text"])) > 3  # a varied answer, so that agreeing on it means something
    assert vllm["text"] == hf["text"]
    if family == "gemma3":  # vLLM 0.32's CPU attention has no bidirectional image span: hf computed the same way
        assert vllm["yes"] == pytest.approx(hf["yes_causal"], abs=2e-3)
        assert vllm["yes"] != pytest.approx(hf["yes"], abs=2e-3)  # a GPU build (mm_prefix support) would match
    else:
        assert vllm["yes"] == pytest.approx(hf["yes"], abs=2e-3)
    assert vllm["mean_numbers"] == hf["mean_numbers"]  # expected-value boxes wherever hf has them


@needs_vllm
def test_ground_boxes_are_the_hf_engines_expected_values(image):
    """Grounding on cxrlm-tiny: expected-value boxes (with their scores) from vLLM's digit log-probabilities."""
    script = (
        "import json, sys; from cxrlm.io.image import load_image; from cxrlm.models import load_model\n"
        "img = load_image(sys.argv[1])\n"
        "for engine in ('hf', 'vllm'):\n"
        "    m = load_model(sys.argv[2], device='cpu', engine=engine)\n"
        "    pieces = []\n"
        "    out = m.predict(img, 'ground', phrase='right lung', on_text=pieces.append)\n"
        "    print(json.dumps({'engine': engine, 'boxes': [[*b.xyxy, b.score] for b in out.boxes],\n"
        "                      'raw': out.raw_text, 'streamed': ''.join(pieces), 'pieces': len(pieces)}))\n"
    )
    run = subprocess.run([VLLM_PYTHON, "-c", script, str(image), str(DEFAULT_MODEL_DIR)], capture_output=True,
                         text=True, env=ENV, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {row["engine"]: row for row in map(json.loads, run.stdout.splitlines()[-2:])}
    hf, vllm = rows["hf"], rows["vllm"]
    assert hf["boxes"] and all(box[4] is not None for box in hf["boxes"])  # scored: expected values, not greedy
    assert vllm["boxes"] == [pytest.approx(box, abs=1e-3) for box in hf["boxes"]]
    assert vllm["streamed"] == vllm["raw"] and vllm["pieces"] > 1  # streamed as it was written


@pytest.mark.skipif(MISSING is None, reason="vLLM is installed here")
def test_missing_vllm_is_a_one_line_error(tiny_checkpoint, image):
    run = cxrlm(sys.executable, "report", str(image), "--engine", "vllm", "--model", str(tiny_checkpoint))
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert "pip install 'cxrlm[vllm]'" in run.stderr


@needs_vllm
def test_serve_with_vllm_answers_the_openai_client(image, tmp_path):
    """`cxrlm serve --engine vllm` on loopback, asked by the official OpenAI client, streamed and not."""
    import base64
    import socket
    import time

    import openai

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [VLLM_PYTHON, "-m", "cxrlm", "serve", "--engine", "vllm", "--model", str(DEFAULT_MODEL_DIR), "--port",
         str(port), "--db", f"sqlite:///{tmp_path / 'db.sqlite'}", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.err", "w"), env=ENV)  # noqa: SIM115
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused-on-loopback", max_retries=0)
        deadline = time.monotonic() + 600
        while True:
            assert server.poll() is None, (tmp_path / "serve.err").read_text()[-2000:]
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline, "cxrlm serve --engine vllm did not start in 600 s"
                time.sleep(1)
        url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                 {"type": "text", "text": "Find abnormalities and support devices."}]}]
        chunks = client.chat.completions.create(model="cxrlm-tiny", messages=messages, stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        reply = client.chat.completions.create(model="cxrlm-tiny", messages=messages)
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert "<answer>" in streamed
    assert streamed == reply.choices[0].message.content  # greedy: the same answer both ways
    assert reply.model_extra["cxrlm"]["output"]["labels"]
