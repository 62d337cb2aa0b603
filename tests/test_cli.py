"""The CLI end to end on a tiny random checkpoint: structured output, JSON schema, one-line errors."""

import json
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

from cxrlm.cli import main
from cxrlm.types import output_schema


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "cxr.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 200), dtype=np.uint8)).save(path)
    return path


def run_cli(*args):
    """Run `cxrlm` in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "cxrlm", *map(str, args)], capture_output=True, text=True,
                          check=False, timeout=300)


def test_help_is_instant_and_lists_verbs():
    result = run_cli("--help")
    assert result.returncode == 0
    for verb in ("report", "chat", "classify", "ground", "models"):
        assert verb in result.stdout
    # --help must not import the heavy stack.
    probe = "import sys, cxrlm.cli as c; c.build_parser(); print(sorted(m for m in ('torch','transformers','pydicom') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False).stdout.strip() == "[]"


@pytest.mark.parametrize("verb,extra", [("report", []), ("classify", []), ("ground", ["left lung"])])
def test_json_output_validates(verb, extra, png, tiny_checkpoint, capsys):
    assert main([verb, str(png), *extra, "--model", str(tiny_checkpoint), "--json", "--max-new-tokens", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    jsonschema.validate(out, output_schema())
    for key in ("labels", "boxes", "reasoning", "findings", "impression", "raw_text", "model", "disclaimer"):
        assert key in out
    assert out["task"] == verb and out["image_size"] == [200, 256]


def test_human_output_starts_with_the_research_notice(png, tiny_checkpoint, capsys):
    assert main(["report", str(png), "--model", str(tiny_checkpoint), "--max-new-tokens", "4"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("[Research and education use only")
    assert "Labels:" in text


def test_chat_answers_follow_ups_from_stdin(png, tiny_checkpoint, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("Provide differentials.\n\nexit\nnever asked\n"))
    assert main(["chat", str(png), "--model", str(tiny_checkpoint), "--json", "--max-new-tokens", "3"]) == 0
    turns = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [t["task"] for t in turns] == ["reason", "chat"]


def test_chat_refuses_an_overlong_line_without_reading_it_all(png, tiny_checkpoint, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("x" * 1_000_000 + "\nnever asked\n"))
    assert main(["chat", str(png), "--model", str(tiny_checkpoint), "--json", "--max-new-tokens", "3"]) == 2
    assert capsys.readouterr().err.strip().endswith("more than 50,000 characters: send a shorter question")
    assert sys.stdin.tell() == 50_001  # read up to the limit, no further


def test_real_dicom_end_to_end(real_dicom, tiny_checkpoint, capsys):
    assert main(["report", str(real_dicom), "--model", str(tiny_checkpoint), "--json", "--max-new-tokens", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["image_size"] == [1841, 1955]
    jsonschema.validate(out, output_schema())


def _bad_inputs(tmp_path, png, checkpoint):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text_dcm = tmp_path / "notes.dcm"
    text_dcm.write_text("this is not a DICOM file\n")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png.read_bytes()[:200])
    long_report = tmp_path / "prior.txt"
    long_report.write_text("no change. " * 5_000)  # 55,000 characters: over the 50,000 limit
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert"}')
    return {
        "missing file": ["report", tmp_path / "nope.png"],
        "empty file": ["report", empty],
        "text renamed .dcm": ["classify", text_dcm],
        "truncated png": ["report", truncated],
        "a directory": ["report", tmp_path],
        "missing model folder": ["report", png, "--model", tmp_path / "no-model"],
        "unsupported family": ["report", png, "--model", bert],
        "bad dtype": ["report", png, "--model", checkpoint, "--dtype", "int3"],
        "zero tokens": ["report", png, "--max-new-tokens", "0"],
        "nine images": ["report", *[png] * 9],
        "prior report too long": ["report", png, "--prior-report", long_report],
    } | ({} if torch.cuda.is_available() else {"no GPU": ["report", png, "--model", checkpoint, "--device", "cuda"]})


def test_bad_inputs_give_one_line_errors(tmp_path, png, tiny_checkpoint):
    for case, args in _bad_inputs(tmp_path, png, tiny_checkpoint).items():
        result = run_cli(*args)
        assert result.returncode != 0, case
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, result.stderr)
        assert "Traceback" not in result.stderr, case


def test_frontal_lateral_and_prior_study_with_prompts_shown(tmp_path, png, tiny_checkpoint, capsys):
    lateral, prior = tmp_path / "lateral.png", tmp_path / "prior.png"
    lateral.write_bytes(png.read_bytes())
    prior.write_bytes(png.read_bytes())
    prior_report = tmp_path / "prior.txt"
    prior_report.write_text("Small left pleural effusion.")
    args = ["report", str(png), str(lateral), "--view", "PA", "--prior", str(prior), "--prior-report",
            str(prior_report), "--model", str(tiny_checkpoint), "--max-new-tokens", "3", "--show-prompt", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    first_prompt = captured.err.split("prompt> ")[1]
    assert first_prompt.count("<image>") == 3  # two current views, then the prior
    assert "Current study: 2 views" in first_prompt and "Prior report: Small left pleural effusion." in first_prompt
    output = json.loads(captured.out)
    assert output["task"] == "report"
    # the tiny checkpoint's profile has no `priors`: the answer says its comparison is unvalidated, once
    assert sum("not trained to read a study against a prior" in w for w in output["warnings"]) == 1


def test_single_image_prompt_is_exactly_the_dialect_and_mentions_no_prior(png, tiny_checkpoint, capsys):
    assert main(["report", str(png), "--model", str(tiny_checkpoint), "--max-new-tokens", "2", "--show-prompt"]) == 0
    first_prompt = capsys.readouterr().err.split("prompt> ")[1].strip()
    assert first_prompt == "<image>Find abnormalities and support devices."


@pytest.mark.parametrize("fmt", ["fhir", "md", "sr"])
def test_report_exports(fmt, tmp_path, png, tiny_checkpoint, capsys):
    out_file = tmp_path / f"report.{fmt}"
    assert main(["report", str(png), "--model", str(tiny_checkpoint), "--max-new-tokens", "2", "--export", fmt,
                 "--out", str(out_file)]) == 0
    data = out_file.read_bytes()
    if fmt == "fhir":
        assert json.loads(data)["status"] == "preliminary"
    elif fmt == "md":
        assert data.decode().startswith("> **Research and education use only.")
    else:
        import pydicom

        assert pydicom.dcmread(out_file).VerificationFlag == "UNVERIFIED"


def test_sr_export_needs_an_output_file(png, tiny_checkpoint):
    result = run_cli("report", png, "--model", tiny_checkpoint, "--export", "sr")
    assert result.returncode == 2 and "add --out" in result.stderr
