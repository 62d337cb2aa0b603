"""`cxrlm study create`: manifest -> design -> every model output the conditions need -> the store.

`plan` checks everything that needs no model (manifest, conditions, design) and decodes every case once, so a bad
image fails before the model loads. `precompute` then runs only what the conditions show: classify probabilities
(CheXpert-14) for 'labels', and those plus the full report (reasoning turn, findings, impression, boxes) for
'reasoning' and 'teaching'; 'manual' alone needs no model. Reports go through model.predict_batch, chunk by chunk,
like `cxrlm report DIR` (cxrlm.batch).
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

from cxrlm.errors import InputError, one_line
from cxrlm.pathologies import CHEXPERT14
from cxrlm.study.design import Assignment, check_design, make_design, parse_conditions
from cxrlm.study.manifest import Case, read_manifest
from cxrlm.study.store import CaseInput, StudyStore

NEEDS_CLASSIFY = {"labels", "reasoning", "teaching"}
NEEDS_REPORT = {"reasoning", "teaching"}


@dataclass
class Plan:
    cases: list[Case]
    mode: str
    conditions: tuple[str, ...]
    seed: int
    design: list[Assignment]
    warnings: list[str]
    pngs: dict[str, list[bytes]]  # case id -> the decoded images as PNG (no DICOM tag survives)


def plan(manifest: str, conditions: str, n_readers: int, mode: str, seed: int, gate: str = "on") -> Plan:
    """Everything but the model: a bad manifest, design or image (the input gate included) is refused here."""
    chosen = parse_conditions(conditions, mode)
    cases = read_manifest(manifest)
    warnings = check_design(n_readers, len(cases), chosen)
    design = make_design(n_readers, [c.case_id for c in cases], chosen, seed)
    if mode == "teaching" and cases[0].reference is None:
        warnings.append("the manifest has no reference labels: the reveal compares resident and model only")
    return Plan(cases, mode, chosen, seed, design, warnings, {c.case_id: _pngs(c, gate) for c in cases})


def _pngs(case: Case, gate: str) -> list[bytes]:
    study = _load(case, gate)
    out = []
    for image in study.images:
        buffer = io.BytesIO()
        image.to_pil().save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def _load(case: Case, gate: str, model=None):
    """The case's study, through the input gate (and the model's view check), as every surface reads images."""
    from cxrlm.gate import check_study, check_views
    from cxrlm.io import load_study

    try:
        study = load_study(case.images)
        check_study(study, gate)
        if model is not None:
            check_views(study, model.profile.views, model.name, gate)
    except InputError as err:
        raise InputError(f"case {case.case_id}: {err}") from None
    return study


def precompute(model, cases: list[Case], conditions: tuple[str, ...], chunk_size: int = 8,
               max_new_tokens: int | None = None, gate: str = "on", progress: bool = False) -> dict[str, dict | None]:
    """case id -> model output (as stored: see model_output), or None for every case when no condition shows one."""
    if not NEEDS_CLASSIFY & set(conditions):
        return {c.case_id: None for c in cases}
    from tqdm import tqdm

    wants_report = bool(NEEDS_REPORT & set(conditions))
    out = {}
    with tqdm(total=len(cases), unit="case", file=sys.stderr, disable=not progress, desc="model") as bar:
        for start in range(0, len(cases), chunk_size):
            chunk = cases[start : start + chunk_size]
            studies = [_load(c, gate, model) for c in chunk]
            reports = (model.predict_batch(studies, "report", max_new_tokens=max_new_tokens) if wants_report
                       else [None] * len(chunk))
            for case, study, report in zip(chunk, studies, reports):
                out[case.case_id] = model_output(model.classify(study, CHEXPERT14), report)
                bar.update(1)
    return out


def model_output(classify, report=None) -> dict:
    """What a study keeps of a model's answers: CheXpert-14 probabilities, and the report's reasoning, sections,
    labels and boxes when there is one."""
    out = {"model": classify.model, "model_notice": classify.model_notice,
           "probabilities": {n: classify.probabilities.get(n) for n in CHEXPERT14}}
    if report is not None:
        data = report.to_dict()
        out |= {"reasoning": data["reasoning"], "findings": data["findings"], "impression": data["impression"],
                "report_labels": [label["name"] for label in data["labels"] if label["present"]],
                "boxes": [{k: box[k] for k in ("label", "xyxy", "xyxy_norm", "score")} for box in data["boxes"]],
                "image_size": data["image_size"], "warnings": [one_line(w, 200) for w in data["warnings"]]}
    return out


def create(store: StudyStore, study_plan: Plan, outputs: dict[str, dict | None], *, name: str,
           model_info: dict) -> tuple[str, dict[str, str]]:
    cases = [CaseInput(c.case_id, study_plan.pngs[c.case_id], c.reference, outputs.get(c.case_id))
             for c in study_plan.cases]
    return store.create_study(name=name, mode=study_plan.mode, conditions=study_plan.conditions,
                              seed=study_plan.seed, model=model_info, cases=cases, design=study_plan.design,
                              warnings=study_plan.warnings)
