"""`cxrlm data ...` end to end: build, validate and instructions for every source; one-line errors."""

import json

import data_layouts
import pytest

from cxrlm import cli
from cxrlm.data.manifest import read_manifest, validate_manifest

SHARED = {"nih14": "nih14", "nih14-64px": "nih14-64px", "covid-chestxray": "covid-chestxray",
          "hannover-covid": "hannover-covid", "iu-xray-reports": "iu-xray-reports"}


@pytest.fixture
def run(monkeypatch, capsys):
    """Run `cxrlm ARGS` with only the data verb registered (other verbs belong to other modules)."""
    from cxrlm.cli import data as verb
    monkeypatch.setattr(cli, "verb_modules", lambda: (verb,))

    def call(*args):
        code = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def test_sources_lists_every_adapter(run):
    from cxrlm.data.sources import SOURCES

    code, out, _ = run("data", "sources")
    assert code == 0 and all(name in out for name in SOURCES) and out.count("license:") == len(SOURCES)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_build_shared_sources(run, shared_data, tmp_path, name):
    out_path = tmp_path / f"{name}.jsonl"
    code, out, err = run("data", "build", name, "--root", shared_data / SHARED[name], "--out", out_path)
    assert code == 0, err
    count = validate_manifest(out_path, check_images=True)
    assert f"wrote {count} records" in out and "prevalence" in out and "Pleural Effusion" in out
    assert "wrote" not in err  # stdout is the summary; stderr only has the progress bar


def test_build_fixture_tree(run, shared_data, tmp_path):
    out_path = tmp_path / "fx.jsonl"
    code, out, _ = run("data", "build", "nih14", "--root", shared_data / "fixtures" / "nih14", "--out", out_path)
    assert code == 0 and validate_manifest(out_path, check_images=True) == 10
    assert "boxes: 10 on 10 images" in out


@pytest.mark.parametrize("name", sorted(data_layouts.LAYOUTS))
def test_build_published_layouts(run, tmp_path, name):
    root = data_layouts.LAYOUTS[name](tmp_path / name)
    out_path = tmp_path / f"{name}.jsonl"
    code, out, err = run("data", "build", name, "--root", root, "--out", out_path, "--seed", 3,
                         "--val-fraction", 0.3, "--test-fraction", 0.3)
    assert code == 0, err
    assert validate_manifest(out_path, check_images=True) == len(read_manifest(out_path)) > 0
    assert run("data", "validate", out_path, "--check-images")[0] == 0
    if name == "mimic-cxr":
        assert "skipped 1 rows whose image file is missing" in out


def test_split_fractions_and_seed_change_splits(run, shared_data, tmp_path):
    root = shared_data / "nih14"
    run("data", "build", "nih14", "--root", root, "--out", tmp_path / "a.jsonl", "--test-fraction", 0.5)
    run("data", "build", "nih14", "--root", root, "--out", tmp_path / "b.jsonl", "--seed", 1)
    a, b = read_manifest(tmp_path / "a.jsonl"), read_manifest(tmp_path / "b.jsonl")
    assert 160 < sum(r.split == "test" for r in a) < 250
    assert [r.split for r in a] != [r.split for r in b]


@pytest.mark.parametrize("args, message", [
    (("data", "build", "nope", "--root", ".", "--out", "{tmp}/x.jsonl"), "unknown data source 'nope'"),
    (("data", "build", "nih14", "--root", "/no/such/dir", "--out", "{tmp}/x.jsonl"), "is not a folder"),
    (("data", "build", "nih14", "--root", "{tmp}", "--out", "{tmp}/x.jsonl"), "labels.csv not found"),
    (("data", "build", "nih14", "--root", "{tmp}", "--out", "{tmp}/x.jsonl", "--val-fraction", "0.9"), "must leave"),
    (("data", "validate", "{tmp}/missing.jsonl"), "does not exist"),
    (("data", "instructions", "--manifest", "{tmp}/missing.jsonl", "--out", "{tmp}/o"), "does not exist"),
])
def test_errors_are_one_line(run, tmp_path, args, message):
    code, _, err = run(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("*.jsonl*"))  # no half-written manifest left behind


def test_no_images_found_is_an_error(run, tmp_path):
    root = data_layouts.mimic_cxr(tmp_path / "mimic")
    for jpg in root.rglob("*.jpg"):
        jpg.unlink()
    code, _, err = run("data", "build", "mimic-cxr", "--root", root, "--out", tmp_path / "m.jsonl")
    assert code == 2 and "no records" in err and "5 rows lacked their image" in err


def test_bad_manifest_line_is_named(run, tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"dataset": "x"}\n')
    code, _, err = run("data", "validate", path)
    assert code == 2 and "line 1" in err


def test_instructions_end_to_end(run, shared_data, tmp_path):
    manifests = []
    for name in ("covid-chestxray", "hannover-covid"):
        manifests.append(tmp_path / f"{name}.jsonl")
        run("data", "build", name, "--root", shared_data / SHARED[name], "--out", manifests[-1])
    root = data_layouts.ms_cxr(tmp_path / "ms")
    manifests.append(tmp_path / "ms.jsonl")
    run("data", "build", "ms-cxr", "--root", root, "--out", manifests[-1], "--val-fraction", 0, "--test-fraction", 0)
    for fmt in ("sft", "grpo"):
        code, out, err = run("data", "instructions", "--manifest", *manifests, "--out", tmp_path / fmt,
                             "--format", fmt, "--mix", "ground=50,conversation=0", "--box-format", "norm1",
                             "--per-image", 3)
        assert code == 0, err
        assert "skipped 57 images: no task fits" in out  # covid `todo` images without lung boxes
        rows = [json.loads(line) for line in (tmp_path / fmt / "train.jsonl").read_text().splitlines()]
        assert rows and all(r["template_version"] == "1.0" for r in rows)
        assert any(r["dataset"] == "ms-cxr" and r["task"] == "ground" for r in rows)
        info = json.loads((tmp_path / fmt / "info.json").read_text())
        assert info["config"]["format"] == fmt and info["parser_box_format"] == "norm1"
    code, _, err = run("data", "instructions", "--manifest", manifests[0], "--out", tmp_path / "x", "--tasks", "dance")
    assert code == 2 and "unknown task 'dance'" in err
