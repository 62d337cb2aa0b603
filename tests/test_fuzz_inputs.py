"""The fuzz test: a seeded corpus of 300 malformed files (tests/fuzz_corpus.py: truncated, bit-flipped, lying
headers, garbled DICOM attributes, decompression bombs, non-images) through `load_image`, the CLI and the
server's upload endpoint. Allowed outcomes: a loaded image, or cxrlm's own one-line error (exit 2 with one
`error:` line; a 4xx with a one-line message). Nothing on stderr but that line; no identifying tag's value out.

The CLI leg calls `cxrlm.cli.main` in-process (capfd sees the process's real stderr file descriptor, C libraries
included): 300 subprocesses would take minutes on a CI CPU for no extra coverage; one subprocess checks the
real entry point on a few files. A longer run with more files and seeds: scripts/fuzz_inputs.py.
"""

import subprocess
import sys
import warnings

import pytest
from fuzz_corpus import MAKERS, build_corpus, load_problem, message_problem

from cxrlm.cli import main
from cxrlm.errors import MESSAGE_LIMIT

CORPUS_SIZE = 300


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("fuzz"), CORPUS_SIZE, seed=0)


def test_corpus_is_seeded_and_covers_every_maker(tmp_path, corpus):
    assert len(corpus) == CORPUS_SIZE and {p.stem.split("-", 1)[1] for p in corpus} == {name for name, _ in MAKERS}
    again = build_corpus(tmp_path, 40, seed=0)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in corpus[:40]]


def test_load_image_gives_an_image_or_one_line_error(corpus, capfd):
    problems = []
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        for path in corpus:
            problem = load_problem(path)
            problems += [problem] if problem else []
    assert not problems, problems[:10]
    assert not escaped, [str(w.message)[:200] for w in escaped[:5]]
    assert capfd.readouterr().err == ""


def test_cli_gives_exit_2_and_one_error_line(corpus, tmp_path, capfd):
    missing_model = tmp_path / "no-model"  # a file that loads then fails on the model: still one line, exit 2
    problems = []
    for path in corpus:
        code = main(["classify", str(path), "--model", str(missing_model)])
        err = capfd.readouterr().err
        lines = err.splitlines()
        if code != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or "unexpected" in err:
            problems.append(f"{path.name}: exit {code}, stderr {err[:300]!r}")
        elif message_problem(path.name, lines[0].removeprefix("error: "), MESSAGE_LIMIT, own=False):
            problems.append(message_problem(path.name, lines[0], MESSAGE_LIMIT, own=False))
    assert not problems, problems[:10]


def test_cli_subprocess_on_a_few_files(corpus, tmp_path):
    for path in corpus[10:13]:  # DICOMs whose attributes are broken three ways
        result = subprocess.run([sys.executable, "-m", "cxrlm", "classify", str(path), "--model", str(tmp_path)],
                                capture_output=True, text=True, check=False, timeout=120)  # fmt: skip
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, (path.name, result.stderr)
        assert result.stderr.startswith("error: ") and "unexpected" not in result.stderr


def test_server_upload_gives_201_or_a_one_line_4xx(corpus, tiny_model, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cxrlm.serve.app import ServeSettings, create_app
    from cxrlm.serve.storage import Store

    store = Store(f"sqlite:///{tmp_path / 'cxrlm.db'}", tmp_path)
    problems, statuses = [], {}
    app = create_app(tiny_model, store, ServeSettings(rate_per_minute=0))
    with TestClient(app, raise_server_exceptions=False) as client:  # a 500 is a finding, not a crash of the test
        for path in corpus:
            response = client.post("/v1/studies", files={"file": (path.name, path.read_bytes())})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            body = response.json()
            text = body["error"]["message"] if response.status_code >= 400 else " ".join(body["warnings"])
            problem = message_problem(path.name, text, MESSAGE_LIMIT, own=False)
            if response.status_code not in (201, 400, 413) or problem:
                problems.append(f"{path.name}: {response.status_code} {problem or text[:200]!r}")
    assert not problems, problems[:10]
    assert statuses.get(201) and statuses.get(400), statuses
