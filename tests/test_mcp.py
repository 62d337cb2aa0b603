"""`cxrlm mcp` through the official MCP Python client: stdio (stdio_client over `python -m cxrlm mcp`) and
streamable HTTP (streamable_http_client against `cxrlm mcp --http`), on DICOMs whose identifying tags all carry
tests/orthanc.py's MARKER."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from tests.orthanc import MARKER, write_radiograph

pytest.importorskip("mcp")
REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
TOOLS = {"report", "classify", "ground", "compare", "label", "export"}


def _radiograph(folder: Path, name: str, seed: int, study_date: date) -> Path:
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    pixels = (np.linspace(0, 200, 128 * 128).reshape(128, 128) + rng.integers(0, 50, (128, 128))).astype(np.uint8)
    return write_radiograph(folder / name, pixels, patient=7, study_date=study_date, view="PA",
                            study_uid=generate_uid(), series_uid=generate_uid(), series_number=1)


def _with_priors(checkpoint: Path, folder: Path) -> Path:
    """The tiny checkpoint declared prior-capable (cxrlm.json), so that compare runs; its files are links."""
    folder.mkdir()
    for path in checkpoint.iterdir():
        (folder / path.name).symlink_to(path)
    (folder / "cxrlm.json").write_text(json.dumps({"priors": True}))
    return folder


def _stored(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "store" / "audit.jsonl").read_text().splitlines()]


async def _stdio(tmp_path: Path, checkpoint: Path, calls):
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable, env=ENV, cwd=str(tmp_path),
                                   args=["-m", "cxrlm", "mcp", "--model", str(checkpoint), "--device", "cpu",
                                         "--gate", "warn", "--root", str(tmp_path / "inputs"), "--store", "store"])
    with (tmp_path / "server-stderr.txt").open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await calls(session)


def test_every_tool_on_a_marker_dicom_returns_the_stored_evidence_and_leaks_nothing(tmp_path, tiny_checkpoint):
    _radiograph(tmp_path / "inputs", "current.dcm", 1, date(2023, 9, 18))
    _radiograph(tmp_path / "inputs", "prior.dcm", 2, date(2021, 3, 4))
    checkpoint = _with_priors(tiny_checkpoint, tmp_path / "tiny-with-priors")

    async def calls(session):
        tools = await session.list_tools()
        answers = {name: await session.call_tool(name, arguments) for name, arguments in (
            ("report", {"image_path": "current.dcm"}),
            ("classify", {"image_path": "current.dcm"}),
            ("ground", {"image_path": "current.dcm", "phrase": "right lung"}),
            ("compare", {"image_path": "current.dcm", "prior_image_path": "prior.dcm",
                         "prior_report": "FINDINGS: small left pleural effusion. IMPRESSION: effusion."}),
            ("label", {"report_text": "IMPRESSION: No pneumothorax. Possible right lower lobe pneumonia."}),
        )}
        result_id = answers["report"].structured_content["evidence"]["id"]
        for fmt in ("fhir", "sr"):
            answers[f"export-{fmt}"] = await session.call_tool(
                "export", {"result_id": result_id, "format": fmt, "source_path": "current.dcm"})
        refusals = {why: await session.call_tool(tool, arguments) for why, tool, arguments in (
            ("outside", "classify", {"image_path": "../elsewhere.png"}),
            ("long phrase", "ground", {"image_path": "current.dcm", "phrase": "x" * 201}),
            ("no argument", "report", {}),
            ("wrong source", "export", {"result_id": result_id, "format": "sr", "source_path": "prior.dcm"}),
            ("unknown tool", "diagnose", {"image_path": "current.dcm"}),
        )}
        listing = await session.read_resource("cxrlm://results")
        stored = await session.read_resource(f"cxrlm://results/{result_id}")
        return tools, answers, refusals, listing, stored

    tools, answers, refusals, listing, stored = asyncio.run(_stdio(tmp_path, checkpoint, calls))
    assert {tool.name for tool in tools.tools} == TOOLS
    assert not any(answer.is_error for answer in answers.values()), [a.content for a in answers.values()]
    assert all(answer.is_error for answer in refusals.values())
    audit = _stored(tmp_path)
    returned = [a.structured_content["evidence"] for a in [*answers.values(), *refusals.values()]]
    assert audit == returned  # every call, answered or refused, stored exactly as returned

    report = answers["report"].structured_content
    evidence = report["evidence"]
    assert evidence["tool"] == "report" and evidence["status"] == "answered" and evidence["reason"] is None
    assert len(evidence["model"]["weights_sha256"]) == 64 and evidence["model"]["prompt_template_version"]
    assert evidence["preprocessing"][0]["windowing"] and evidence["software"]["mcp"]
    assert len(evidence["input_pixels_sha256"]) == 1 and set(evidence["timings_s"]) >= {"read_s", "model_s"}
    import hashlib

    assert evidence["output_sha256"] == hashlib.sha256(
        json.dumps(report["output"], sort_keys=True).encode()).hexdigest()
    compare = answers["compare"].structured_content["evidence"]
    assert [p["study"] for p in compare["preprocessing"]] == ["current", "prior"]
    assert compare["input_pixels_sha256"][0] == evidence["input_pixels_sha256"][0] != compare["input_pixels_sha256"][1]
    labels = answers["label"].structured_content["output"]["labels"]
    assert labels["Pneumothorax"] == "negative" and labels["Pneumonia"] == "uncertain"
    fhir = answers["export-fhir"].structured_content["output"]
    assert fhir["document"]["resourceType"] == "DiagnosticReport" and Path(fhir["path"]).is_file()
    import pydicom

    sr = pydicom.dcmread(answers["export-sr"].structured_content["output"]["path"])
    source = pydicom.dcmread(tmp_path / "inputs" / "current.dcm")
    assert sr.Modality == "SR" and source.SOPInstanceUID in str(sr)  # the SR references the image it reports on

    reasons = {name: answer.structured_content["evidence"]["reason"] for name, answer in refusals.items()}
    assert "outside" in reasons["outside"] and "1 to 200 characters" in reasons["long phrase"]
    assert "image_path" in reasons["no argument"] and "not the image" in reasons["wrong source"]
    assert [refusals[why].structured_content["evidence"]["tool"] for why in ("no argument", "unknown tool")] == [
        "report", "unknown"]
    assert json.loads(listing.contents[0].text)[0]["tool"] == "export"  # newest first: exports are results too
    assert json.loads(stored.contents[0].text) == {"output": report["output"], "evidence": evidence}

    # Privacy: no identifying tag value anywhere the server answered or wrote.
    answered = json.dumps([a.model_dump(mode="json") for a in [*answers.values(), *refusals.values()]])
    answered += listing.model_dump_json() + stored.model_dump_json()
    assert MARKER not in answered and "19500101" not in answered
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "inputs" not in p.parts and not p.is_symlink()]
    assert {p.name for p in written} >= {"audit.jsonl", "server-stderr.txt"} and len(written) > 8
    for path in written:
        data = path.read_bytes()
        assert MARKER.encode() not in data and b"19500101" not in data, path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def http_server(tmp_path, tiny_checkpoint):
    """`cxrlm mcp --http` on a free loopback port, with a token; stopped afterwards."""
    port, token = _free_port(), "t" * 8 + "0123456789abcdef"
    (tmp_path / "inputs").mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "cxrlm", "mcp", "--model", str(tiny_checkpoint), "--device", "cpu", "--gate", "warn",
         "--root", "inputs", "--store", "store", "--http", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=ENV | {"CXRLM_MCP_TOKEN": token}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read().decode()
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/mcp", token
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_streamable_http_needs_the_token_and_refuses_compare_without_priors(http_server, tmp_path):
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    url, token = http_server
    _radiograph(tmp_path / "inputs", "current.dcm", 1, date(2023, 9, 18))
    _radiograph(tmp_path / "inputs", "prior.dcm", 2, date(2021, 3, 4))

    async def calls():
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as client, \
                streamable_http_client(url, http_client=client) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            compare = await session.call_tool("compare", {"image_path": "current.dcm",
                                                          "prior_image_path": "prior.dcm"})
            label = await session.call_tool("label", {"report_text": "Small left pleural effusion."})
            huge = await session.call_tool("label", {"report_text": "effusion " * 6000})
            return tools, compare, label, huge

    tools, compare, label, huge = asyncio.run(calls())
    assert {tool.name for tool in tools.tools} == TOOLS
    assert compare.is_error and "not trained to compare" in compare.content[0].text
    assert "input_pixels_sha256" not in compare.structured_content["evidence"]  # refused before any file was read
    assert label.structured_content["output"]["labels"]["Pleural Effusion"] == "positive"
    assert huge.is_error and "50,000 characters" in huge.content[0].text
    assert _stored(tmp_path) == [a.structured_content["evidence"] for a in (compare, label, huge)]
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}):
        response = httpx2.post(url, headers=headers | {"Accept": "application/json, text/event-stream"}, json={})
        assert response.status_code == 401


def test_http_beyond_loopback_needs_a_token(monkeypatch, tmp_path, capsys):
    from cxrlm.cli import main

    monkeypatch.delenv("CXRLM_MCP_TOKEN", raising=False)
    assert main(["mcp", "--http", "0.0.0.0:8765", "--root", str(tmp_path), "--store", str(tmp_path / "s")]) == 2
    assert "refusing to listen on 0.0.0.0 without a token" in capsys.readouterr().err
    monkeypatch.setenv("CXRLM_MCP_TOKEN", "short")
    assert main(["mcp", "--http", "127.0.0.1:8765", "--root", str(tmp_path)]) == 2
    assert "fewer than 16 characters" in capsys.readouterr().err


def test_bounds_are_checked_before_any_file_is_decoded(monkeypatch, tmp_path, tiny_model):
    from cxrlm.mcp import tools as tools_module
    from cxrlm.mcp.evidence import EvidenceStore

    def never(*_, **__):
        raise AssertionError("a file was decoded")

    monkeypatch.setattr("cxrlm.io.load_study", never)
    monkeypatch.setattr(tools_module, "MAX_FILE_BYTES", 100)
    (tmp_path / "big.png").write_bytes(b"\0" * 101)
    store = EvidenceStore(tmp_path / "store")
    tools = tools_module.Tools(tiny_model, tmp_path, store, "warn", {"name": "tiny"})
    for work, args, reason in (
            (tools.predict, ("report", "big.png"), "larger than"),
            (tools.predict, ("report", "missing.png"), "not a file"),
            (tools.predict, ("report", "x" * 5000), "1 to 4096 characters"),
            (tools.predict, ("ground", "big.png", " "), "phrase must have"),
            (tools.export, ("0" * 32, "pdf", ""), "format must be one of"),
            (tools.export, ("../../etc/passwd", "fhir", ""), "names no stored"),
    ):
        answer = tools.call("x", work, *args)
        assert answer.is_error and reason in answer.content[0].text
    assert len(_stored(tmp_path)) == 6


def test_refusals_before_and_by_the_gate_are_audited_without_the_values_sent(tmp_path, tiny_model):
    """In process (the SDK's in-memory client): the SDK's own argument refusals and the input gate's."""
    from mcp.client.client import Client
    from PIL import Image

    from cxrlm.mcp import build_server
    from cxrlm.mcp.evidence import EvidenceStore
    from cxrlm.mcp.tools import Tools

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(tmp_path / "cat.png")
    store = EvidenceStore(tmp_path / "store")
    server = build_server(Tools(tiny_model, tmp_path, store, "on", {"name": "tiny"}))

    async def calls():
        async with Client(server) as client:
            return [await client.call_tool(name, arguments) for name, arguments in (
                ("report", {"image_path": [MARKER]}), (MARKER, {}), ("classify", {"image_path": "cat.png"}))]

    mistyped, unknown, gated = asyncio.run(calls())
    assert mistyped.content[0].text == "report refused its arguments: image_path: Input should be a valid string " \
                                       "(see the tool's input schema)"
    assert unknown.content[0].text.startswith("unknown tool: use one of report")
    assert gated.is_error and "override for research" in gated.content[0].text  # the gate's refusal
    assert gated.structured_content["evidence"]["input_pixels_sha256"]  # the image was read, then refused
    assert _stored(tmp_path) == [a.structured_content["evidence"] for a in (mistyped, unknown, gated)]
    assert MARKER not in (tmp_path / "store" / "audit.jsonl").read_text()
