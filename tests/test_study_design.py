"""The counterbalanced design's invariants (hypothesis), its refusals, and the manifest's bounds."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrlm.errors import ConfigError, InputError
from cxrlm.study.design import READER_CONDITIONS, check_design, make_design, parse_conditions
from cxrlm.study.manifest import read_manifest

designs = st.integers(1, 3).flatmap(lambda k: st.tuples(
    st.just(READER_CONDITIONS[:k]), st.integers(1, 12), st.integers(1, 8).map(lambda b: b * k), st.integers(0, 10**6)))


@settings(max_examples=60, deadline=None)
@given(designs)
def test_every_reader_reads_every_case_once_with_equal_blocks(args):
    conditions, readers, n_cases, seed = args
    cases = [f"c{i}" for i in range(n_cases)]
    design = make_design(readers, cases, conditions, seed)
    for reader in range(readers):
        mine = [a for a in design if a.reader == reader]
        assert sorted(a.case for a in mine) == sorted(cases)
        assert sorted(a.position for a in mine) == list(range(1, n_cases + 1))
        assert Counter(a.condition for a in mine) == {c: n_cases // len(conditions) for c in conditions}


@settings(max_examples=60, deadline=None)
@given(designs)
def test_every_k_consecutive_readers_read_each_case_under_every_condition(args):
    conditions, readers, n_cases, seed = args
    k = len(conditions)
    design = make_design(readers, [f"c{i}" for i in range(n_cases)], conditions, seed)
    for first in range(0, readers - k + 1, k):
        group = [a for a in design if first <= a.reader < first + k]
        per_case = Counter((a.case, a.condition) for a in group)
        assert set(per_case.values()) == {1} and len(per_case) == n_cases * k
    if readers % k == 0:  # balanced: each case under each condition by readers / k readers
        assert set(Counter((a.case, a.condition) for a in design).values()) == {readers // k}


def test_the_seed_reproduces_the_design_and_orders_differ_between_readers():
    cases = [f"c{i}" for i in range(30)]
    first = make_design(6, cases, READER_CONDITIONS, 7)
    assert first == make_design(6, cases, READER_CONDITIONS, 7)
    assert first != make_design(6, cases, READER_CONDITIONS, 8)
    orders = {tuple(a.case for a in first if a.reader == r) for r in range(6)}
    assert len(orders) == 6


def test_refusals_and_warnings():
    with pytest.raises(ConfigError, match="drop 1 case"):
        check_design(3, 7, READER_CONDITIONS)
    with pytest.raises(ConfigError, match="at least one case per condition"):
        check_design(3, 2, READER_CONDITIONS)
    with pytest.raises(ConfigError, match="--readers"):
        check_design(0, 6, READER_CONDITIONS)
    assert "use 6 readers" in check_design(4, 6, READER_CONDITIONS)[0]
    assert check_design(6, 6, READER_CONDITIONS) == []
    with pytest.raises(ConfigError, match="repeat"):
        make_design(1, ["a", "a", "b"], READER_CONDITIONS, 0)
    with pytest.raises(ConfigError, match="unknown condition"):
        parse_conditions("manual,ai")
    with pytest.raises(ConfigError, match="twice"):
        parse_conditions("manual,manual")
    assert parse_conditions("whatever", "teaching") == ("teaching",)


def _png(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (32, 32), 128).save(path)


def test_manifest_csv_and_jsonl(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png")
    (tmp_path / "cases.csv").write_text("case_id,images,Cardiomegaly,Edema\nA,img/a.png,1,\nB,img/b.png;img/a.png,0,-1\n")
    cases = read_manifest(tmp_path / "cases.csv")
    assert [c.case_id for c in cases] == ["A", "B"] and len(cases[1].images) == 2
    assert cases[0].reference["Cardiomegaly"] == 1 and cases[0].reference["Edema"] is None
    assert cases[1].reference["Edema"] is None and cases[1].reference["Fracture"] is None
    (tmp_path / "cases.jsonl").write_text('{"case_id": "A", "images": "img/a.png"}\n')
    assert read_manifest(tmp_path / "cases.jsonl")[0].reference is None


@pytest.mark.parametrize("body, message", [
    ("case_id,images\nA,../outside.png\n", "leaves the manifest's folder"),
    ("case_id,images\nA,img/missing.png\n", "does not exist"),
    ("case_id,images\nA,img/a.png\nA,img/a.png\n", "repeats"),
    ("case_id,images\nbad id,img/a.png\n", "case id"),
    ("case_id,images,Cardiomegaly\nA,img/a.png,yes\n", "use 1, 0 or blank"),
    ("case_id,image\nA,img/a.png\n", "columns must be"),
    ("case_id,images,Heart\nA,img/a.png\n", "unknown: Heart"),
    ("case_id,images\n", "no cases"),
    ("case_id,images\nA,img/a.txt\n", "not PNG"),
])
def test_manifest_refusals_are_one_line(tmp_path, body, message):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path.parent / "outside.png")
    (tmp_path / "img" / "a.txt").write_text("x")
    (tmp_path / "m.csv").write_text(body)
    with pytest.raises(InputError, match=message) as info:
        read_manifest(tmp_path / "m.csv")
    assert "\n" not in str(info.value)


def test_manifest_bounds(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("case_id,images\n" + "".join(f"c{i},a.png\n" for i in range(11)))
    with pytest.raises(InputError, match="the limit is 10"):
        read_manifest(tmp_path / "m.csv", max_cases=10)
    (tmp_path / "v.csv").write_text("case_id,images\nA," + ";".join(["a.png"] * 9) + "\n")
    with pytest.raises(InputError, match="at most 8 views"):
        read_manifest(tmp_path / "v.csv")
