"""`cxrlm mcp` through the official MCP Python client: stdio_client + ClientSession over `python -m cxrlm mcp`."""

import asyncio
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_dicom import make_dicom

pytest.importorskip("mcp")
MARKER = "ZZMARKER7731"
REPO = Path(__file__).resolve().parents[1]


def _dicom(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    pixels = (np.linspace(0, 4000, 128 * 128).reshape(128, 128) + rng.integers(0, 50, (128, 128))).astype(np.uint16)
    tags = {name: MARKER for name in ("PatientName", "PatientID", "AccessionNumber", "InstitutionName",
                                      "ReferringPhysicianName", "StudyDescription")}
    return make_dicom(tmp_path / "study.dcm", pixels, bits_stored=12, ViewPosition="PA", PatientBirthDate="19500101",
                      **tags)


async def _session(tmp_path: Path, checkpoint: Path, calls):
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    params = StdioServerParameters(command=sys.executable, env=env, cwd=str(tmp_path),
                                   args=["-m", "cxrlm", "mcp", "--model", str(checkpoint), "--device", "cpu",
                                         "--gate", "warn", "--root", str(tmp_path), "--audit", "audit.jsonl"])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return await calls(session)


def test_mcp_report_on_a_dicom_returns_the_stored_evidence(tmp_path, tiny_checkpoint):
    _dicom(tmp_path)

    async def calls(session):
        tools = await session.list_tools()
        report = await session.call_tool("report", {"image_path": "study.dcm"})
        outside = await session.call_tool("classify", {"image_path": "../elsewhere.png"})
        long_phrase = await session.call_tool("ground", {"image_path": "study.dcm", "phrase": "x" * 201})
        return tools, report, outside, long_phrase

    tools, report, outside, long_phrase = asyncio.run(_session(tmp_path, tiny_checkpoint, calls))
    assert {tool.name for tool in tools.tools} == {"report", "classify", "ground"}
    assert not report.is_error
    result = report.structured_content
    evidence = result["evidence"]
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert audit == [evidence]  # one call answered, its record stored as returned
    assert evidence["tool"] == "report" and len(evidence["model"]["weights_sha256"]) == 64
    assert evidence["model"]["prompt_template_version"] and evidence["preprocessing"][0]["windowing"]
    assert len(evidence["input_pixels_sha256"][0]) == 64 and evidence["software"]["mcp"]
    import hashlib

    assert evidence["output_sha256"] == hashlib.sha256(
        json.dumps(result["output"], sort_keys=True).encode()).hexdigest()
    assert outside.is_error and "outside" in outside.content[0].text
    assert long_phrase.is_error and "1 to 200 characters" in long_phrase.content[0].text
    everything = json.dumps([result, outside.content[0].text]) + (tmp_path / "audit.jsonl").read_text()
    assert MARKER not in everything and "19500101" not in everything
