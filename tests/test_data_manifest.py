"""Manifest records, reading/writing/validation errors, and the per-patient split."""

import json
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrlm.data.manifest import (
    ManifestRecord,
    label_value,
    make_box,
    normal_labels,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from cxrlm.data.split import assign_split, check_fractions, patient_unit, source_split
from cxrlm.errors import ConfigError, InputError
from cxrlm.pathologies import CHEXPERT14


def record(**overrides) -> ManifestRecord:
    fields = {"dataset": "toy", "study_id": "s1", "patient_id": "p1", "image": "images/a.png", "root": "/data/toy",
              "view_position": "PA", "split": "train", "width": 100, "height": 80, "license": "CC0"}
    fields.update(overrides)
    return ManifestRecord(**fields)


def test_record_round_trips_through_json_and_fills_missing_labels():
    rec = record(boxes=[make_box("Nodule", (10, 20, 5, 40), chexpert="Lung Lesion")], extra={"brixia_global": 7})
    rec.labels["Edema"] = 1
    again = ManifestRecord.from_dict(json.loads(rec.to_json()))
    assert again == rec
    assert again.boxes[0]["xyxy"] == [5.0, 20.0, 10.0, 40.0]  # corners sorted
    partial = ManifestRecord.from_dict({"dataset": "d", "study_id": "s", "patient_id": "p", "labels": {"Edema": 0}})
    assert set(partial.labels) == set(CHEXPERT14) and partial.labels["Edema"] == 0 and partial.labels["Fracture"] is None


def test_schema_file_is_a_valid_draft7_schema_and_matches_the_dataclass():
    import jsonschema

    from cxrlm.data.manifest import manifest_schema

    schema = manifest_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert set(schema["required"]) == set(ManifestRecord.__dataclass_fields__)
    jsonschema.validate(json.loads(record().to_json()), schema)  # the reference validator agrees


def test_image_path_joins_root_unless_absolute():
    assert str(record().image_path) == "/data/toy/images/a.png"
    assert str(record(image="/abs/b.png").image_path) == "/abs/b.png"
    assert record(image=None).image_path is None


@pytest.mark.parametrize("text, value", [("1.0", 1), ("0", 0), ("-1.0", -1), ("", None), (" ", None),
                                         (float("nan"), None), (None, None), (1, 1)])
def test_label_value(text, value):
    assert label_value(text) == value


def test_label_value_rejects_other_numbers():
    with pytest.raises(ValueError):
        label_value("2")


def test_positives_and_normal_labels():
    rec = record()
    rec.labels.update({"Edema": 1, "Atelectasis": -1, "Fracture": 0})
    assert rec.positives() == ["Edema", "Atelectasis"]
    assert rec.positives(uncertain_positive=False) == ["Edema"]
    normal = normal_labels()
    assert normal["No Finding"] == 1 and normal["Support Devices"] is None and normal["Edema"] == 0


def test_write_read_validate(tmp_path):
    path = tmp_path / "m.jsonl"
    assert write_manifest([record(), record(study_id="s2", image="images/b.png")], path) == 2
    assert validate_manifest(path) == 2
    records = read_manifest(path, root=tmp_path)
    assert [r.study_id for r in records] == ["s1", "s2"] and records[0].root == str(tmp_path)


def test_relative_root_is_relative_to_the_manifest(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "m.jsonl"
    write_manifest([record(root="../data")], path)
    assert read_manifest(path)[0].root == str((tmp_path / "data").resolve())


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(split="dev"), "line 2: split"),
        (lambda d: d["labels"].update({"Edema": 2}), "line 2: labels.Edema"),
        (lambda d: d["labels"].pop("Edema"), "line 2: labels"),
        (lambda d: d.update(view_position="OBLIQUE"), "line 2: view_position"),
        (lambda d: d.update(boxes=[{"label": "x", "xyxy": [1, 2, 3], "kind": "finding"}]), "line 2: boxes.0.xyxy"),
        (lambda d: d.update(boxes=[{"label": "x", "xyxy": [1, 2, 300, 4], "kind": "finding"}]), "outside the 100x80"),
        (lambda d: d.pop("patient_id"), "line 2"),
        (lambda d: d.update(surprise=1), "line 2"),
    ],
)
def test_validate_names_the_bad_line(tmp_path, change, message):
    good = json.loads(record().to_json())
    bad = json.loads(record().to_json())
    change(bad)
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(good), json.dumps(bad)])
    with pytest.raises(InputError, match=message) as err:
        validate_manifest(path)
    assert "\n" not in str(err.value)


def test_bad_json_and_empty_and_missing_files(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [record().to_json(), "", "{oops"])
    with pytest.raises(InputError, match="line 3: not valid JSON"):
        read_manifest(path)
    with pytest.raises(InputError, match="line 1: expected a JSON object"):
        read_manifest(write_lines(tmp_path / "list.jsonl", ["[1, 2]"]))
    with pytest.raises(InputError, match="no records"):
        validate_manifest(write_lines(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(InputError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="line 1: not a manifest record"):
        read_manifest(write_lines(tmp_path / "odd.jsonl", ['{"dataset": "x"}']))


def test_check_images(tmp_path):
    path = tmp_path / "m.jsonl"
    write_manifest([record(root=str(tmp_path))], path)
    with pytest.raises(InputError, match="images/a.png does not exist"):
        validate_manifest(path, check_images=True)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    assert validate_manifest(path, check_images=True) == 1


# ---------------------------------------------------------------- split


def test_split_is_deterministic_and_seeded():
    keys = [f"nih:{i}" for i in range(2000)]
    first = [assign_split(k, 0) for k in keys]
    assert first == [assign_split(k, 0) for k in keys]
    assert first != [assign_split(k, 1) for k in keys]
    counts = {s: first.count(s) for s in ("train", "val", "test")}
    assert 1500 < counts["train"] < 1700 and 150 < counts["val"] < 250 and 150 < counts["test"] < 250


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=30), st.integers(0, 10**6), st.floats(0, 0.45), st.floats(0, 0.45))
def test_split_fractions_are_nested_ranges(key, seed, val, test):
    unit = patient_unit(key, seed)
    assert 0.0 <= unit < 1.0
    split = assign_split(key, seed, val, test)
    expected = "test" if unit < test else ("val" if unit < test + val else "train")
    assert split == expected


def test_no_patient_straddles_splits_whatever_the_order():
    patients = defaultdict(set)
    for image in range(3000):
        patient = f"p{image % 400}"
        patients[patient].add(assign_split(f"x:{patient}", 7))
    assert all(len(splits) == 1 for splits in patients.values())


@pytest.mark.parametrize("val, test", [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0), (0.2, 1.2)])
def test_bad_fractions(val, test):
    with pytest.raises(ConfigError):
        check_fractions(val, test)


def test_source_split_names():
    assert [source_split(s) for s in ("validate", "valid", "Validation", "train", "test", "", None, "other")] == [
        "val", "val", "val", "train", "test", None, None, None]
