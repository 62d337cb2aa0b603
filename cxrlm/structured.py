"""The structured chest X-ray report: a documented schema and the rules that fill it from a ModelOutput.

Sections follow the usual CXR template: technique, comparison, findings by region, numbered impression,
differentials with likelihood, recommendations, critical-finding flags, and positive findings linked to the
model's boxes. Every rule here is data (region keywords, likelihood words, critical terms, negation cues) read by
small functions, and the result is checked against cxrlm/schema/structured_report.json.

What this module does not do: it never invents content. With no prior study the comparison is "None available.";
a region with no sentence is left empty (not "normal"); it writes no file formats except Markdown (FHIR and DICOM
SR live in cxrlm.export). Labels come from the negation-aware report labeler (cxrlm.data.labeler, imported lazily).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

from cxrlm import DISCLAIMER
from cxrlm.pathologies import normalize_label
from cxrlm.prompts.parsers import parse_list, parse_report, split_reasoning
from cxrlm.types import Box, ModelOutput, Study, Task

STRUCTURED_SCHEMA_VERSION = "1.1"
NO_COMPARISON = "None available."

# Regions in report order, with their heading.
REGIONS = {
    "lines_tubes": "Lines and tubes",
    "lungs": "Lungs",
    "pleura": "Pleura",
    "heart_mediastinum": "Heart and mediastinum",
    "bones_soft_tissues": "Bones and soft tissues",
    "other": "Other",
}

# A sentence goes to the region whose keyword appears first in it (ties: the order here). Whole-word prefixes.
REGION_KEYWORDS = {
    "lines_tubes": (
        r"tubes?", r"lines?", r"catheters?", r"picc", r"pacemakers?", r"pacer", r"leads?", r"wires?", r"ports?",
        r"stents?", r"drains?", r"devices?", r"enteric", r"endotracheal", r"tracheostomy", r"sternotomy",
        r"defibrillator", r"aicd", r"clips?",
    ),
    "pleura": (
        r"pleura\w*", r"effusions?", r"pneumothora\w*", r"costophrenic", r"hydrothorax", r"fissures?",
    ),
    "heart_mediastinum": (
        r"heart", r"cardi\w*", r"mediastin\w*", r"hil(?:a|um|ar)", r"aort\w*", r"trachea", r"pericardi\w*",
        r"cardiomediastinal",
    ),
    "bones_soft_tissues": (
        r"bones?", r"osseous", r"ribs?", r"fractures?", r"spine", r"spinal", r"vertebra\w*", r"clavicles?",
        r"scoliosis", r"degenerative", r"soft tissues?", r"subcutaneous", r"shoulders?", r"humer\w*", r"skeletal",
    ),
    "lungs": (
        r"lungs?", r"pulmonary", r"opacit\w*", r"consolidat\w*", r"atelecta\w*", r"edema", r"nodul\w*",
        r"mass(?:es)?", r"pneumonia", r"infiltrat\w*", r"airspace", r"interstitial", r"emphysema\w*",
        r"hyperinfla\w*", r"lob(?:e|es|ar)", r"basilar", r"bases", r"parenchym\w*", r"granulom\w*", r"fibros\w*",
        r"scarring", r"vascula\w*", r"apex", r"apices",
    ),
}

# CheXpert label -> region, for positive findings that come from labels rather than a sentence.
LABEL_REGIONS = {
    "Support Devices": "lines_tubes",
    "Pneumothorax": "pleura",
    "Pleural Effusion": "pleura",
    "Pleural Other": "pleura",
    "Cardiomegaly": "heart_mediastinum",
    "Enlarged Cardiomediastinum": "heart_mediastinum",
    "Fracture": "bones_soft_tissues",
}

# Likelihood words of a differential (checked in order: "less likely" before "likely").
LIKELIHOOD_WORDS = (
    ("less likely", "low"),
    ("unlikely", "low"),
    ("low likelihood", "low"),
    ("most likely", "high"),
    ("more likely", "high"),
    ("likely", "high"),
    ("probable", "high"),
    ("probably", "high"),
    ("possible", "medium"),
    ("possibly", "medium"),
    ("cannot be excluded", "medium"),
)

# A differential item names a diagnosis: a label name, a finding of the labeler's lexicon (cxrlm/data/lexicon), or
# one of these diagnoses the lexicon lacks. Anything else (yes/no, the question, a sentence) is not a differential.
DIAGNOSIS_TERMS = (
    r"aspiration", r"tuberculosis", r"tb", r"infect\w*", r"viral", r"bacterial", r"fungal", r"covid(?:-19)?",
    r"sars-cov-2", r"malignan\w*", r"cancer", r"carcinoma", r"lymphoma", r"metasta\w*", r"mesothelioma",
    r"sarcoid\w*", r"heart failure", r"chf", r"ards", r"(?:acute )?respiratory distress", r"hemorrhage",
    r"haemorrhage", r"contusion", r"abscess", r"empyema", r"bronchiectasis", r"bronchitis", r"bronchiolitis",
    r"pulmonary embol\w*", r"infarct\w*", r"interstitial lung disease", r"ild", r"copd", r"asthma",
    r"granulom\w*", r"vasculitis", r"scarring", r"hyperinflation", r"pneumonitis", r"aneurysm", r"dissection",
)
MAX_DIAGNOSIS_WORDS = 8  # longer items are sentences, not the name of a diagnosis
YES_NO = r"yes|no|true|false|present|absent"
NOTHING = r"none|nil|n/a|normal|unremarkable|no differentials?"  # an answer that names no diagnosis

# A recommendation asks someone to do something: a report sentence needs a cue and an action ("The findings suggest
# pneumonia" has a cue but states a finding); an item of a "Recommendations:" section needs an action.
RECOMMENDATION_CUES = r"\b(?:recommend\w*|suggest(?:ed|s)?|advis\w*|follow[- ]?up|correlat\w*|consider)\b"
RECOMMENDED_ACTIONS = (
    r"\b(?:follow[- ]?up|repeat\w*|ct|computed tomography|mri|ultrasound|sonograph\w*|imaging|radiographs?|films?"
    r"|(?:lateral|decubitus|expiratory) views?|correlat\w*|comparison|evaluat\w*|assess\w*|consult\w*|referr?\w*"
    r"|bronchoscop\w*|biops\w*|treat\w*|therap\w*|antibiotics?|thoracente\w*|drain\w*|reposition\w*"
    r"|withdraw\w*|retract\w*|adjust\w*|monitor\w*|work-?up|investigat\w*)\b"
)

# Critical findings. "labels": CheXpert labels the negation-aware labeler decides; "rules": terms it lacks,
# decided by the small negation-aware rule below. Each flag is raised once, by its first source.
CRITICAL_FINDINGS = {
    "tension_pneumothorax": {
        "display": "Tension pneumothorax",
        "rules": (r"tension pneumothora\w*", r"tension physiology"),
    },
    "pneumothorax": {"display": "Pneumothorax", "labels": ("Pneumothorax",)},
    "malpositioned_device": {
        "display": "Malpositioned tube or line",
        "rules": (
            r"malposition\w*", r"mal-positioned", r"misplaced", r"esophageal intubation",
            r"(?:right|left) main ?stem (?:bronchus )?intubation",
            r"(?:tube|catheter|line)\b[^.;]{0,50}\b(?:in|into|within) the (?:right|left) main ?stem bronchus",
            r"(?:tube|catheter)\b[^.;]{0,40}\bcoiled in the (?:esophagus|pharynx|hypopharynx)",
        ),
    },
    "pneumoperitoneum": {
        "display": "Free air / pneumoperitoneum",
        "rules": (
            r"pneumoperitoneum", r"free (?:intraperitoneal |intra-abdominal |subdiaphragmatic )?air",
            r"(?:sub ?diaphragmatic|subphrenic) (?:free )?(?:air|gas|lucency)",
        ),
    },
    "large_pleural_effusion": {
        "display": "Large pleural effusion",
        "rules": (r"(?:large|massive|very large|sizable) (?:\w+ ){0,3}(?:pleural )?effusions?",),
    },
    "pneumomediastinum": {"display": "Pneumomediastinum", "rules": (r"pneumomediastinum",)},
}

# Cues for the rule terms, scoped to one clause (clauses end at "but", "however", ";" ...).
NEGATION_BEFORE = r"\b(?:no|not|without|negative for|free of|absence of|resolved|resolution of|ruled out|removed)\b"
NEGATION_AFTER = (
    r"\b(?:(?:is|are|was|were|has|have) )?(?:been )?"
    r"(?:not (?:seen|identified|present|visualized|demonstrated)|resolved|excluded|absent|ruled out)\b"
)
UNCERTAIN = (
    r"\b(?:possible|possibly|questionable|suspected|suspicious for|concern(?:ing)? for|may represent"
    r"|cannot (?:be )?(?:excluded?|ruled out)|could represent|likely|probable)\b"
)
CLAUSE_BREAK = r"\b(?:but|however|although|though|whereas)\b|;"
PSEUDO_NEGATION = r"\bno (?:\w+ )?change\b|\bnot (?:\w+ )?changed\b|\bno increase\b"
NEGATION_WINDOW_WORDS = 6  # a negation cue reaches this many words forward, like NegEx's window

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+", re.MULTILINE)
_HEADER = re.compile(r"^\s*([A-Za-z][A-Za-z /&-]{2,40}?)\s*:\s*", re.MULTILINE)

# Section headings of a model's "Write a structured report." answer -> our section (None: a findings region).
STRUCTURED_HEADERS = {
    "technique": "technique",
    "comparison": "comparison",
    "findings": "findings",
    "impression": "impression",
    "conclusion": "impression",
    "recommendation": "recommendations",
    "recommendations": "recommendations",
    "differential": "differentials",
    "differentials": "differentials",
    "differential diagnosis": "differentials",
    "lines and tubes": "findings",
    "lines/tubes": "findings",
    "tubes and lines": "findings",
    "support devices": "findings",
    "lungs": "findings",
    "pleura": "findings",
    "heart and mediastinum": "findings",
    "heart/mediastinum": "findings",
    "cardiomediastinal": "findings",
    "bones and soft tissues": "findings",
    "bones/soft tissues": "findings",
    "bones": "findings",
    "soft tissues": "findings",
}


@dataclass
class PositiveFinding:
    """A finding present (or uncertain) in the report, tied to the model's boxes by normalized label name.

    `boxes` are indices into `StructuredReport.boxes`; `evidence` is the sentence that stated it, if any.
    """

    label: str
    region: str
    certainty: str  # "present" | "uncertain"
    probability: float | None = None
    evidence: str | None = None
    boxes: list[int] = field(default_factory=list)


@dataclass
class Differential:
    """One differential diagnosis; `likelihood` is None when the answer gave no likelihood word."""

    diagnosis: str
    likelihood: str | None = None  # "high" | "medium" | "low"


@dataclass
class CriticalFlag:
    """A finding that warrants urgent communication. `source`: "labeler", "rule" or "model_label"."""

    name: str
    display: str
    certainty: str  # "present" | "uncertain"
    source: str
    evidence: str | None = None


@dataclass
class StructuredReport:
    """A structured CXR report. `findings` maps each region of REGIONS to its sentences (empty: not described)."""

    technique: str
    comparison: str
    findings: dict[str, list[str]]
    impression: list[str]
    positive_findings: list[PositiveFinding] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    differentials: list[Differential] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    critical_findings: list[CriticalFlag] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    image_size: tuple[int, int] | None = None
    model: str = ""
    warnings: list[str] = field(default_factory=list)
    disclaimer: str = DISCLAIMER
    model_notice: str | None = None  # the model's own notice (ModelOutput.model_notice), shown next to the disclaimer
    schema_version: str = STRUCTURED_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, a plain JSON tree

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_markdown(self) -> str:
        return render_markdown(self)


def structured_schema() -> dict:
    """The JSON schema of `StructuredReport.to_dict()` (cxrlm/schema/structured_report.json)."""
    from importlib.resources import files

    return json.loads(files("cxrlm").joinpath("schema/structured_report.json").read_text())


def validate_structured(data: dict) -> None:
    """Raise jsonschema.ValidationError when `data` does not follow the structured report schema."""
    import jsonschema

    jsonschema.validate(data, structured_schema())


def build_structured_report(
    output: ModelOutput,
    study: Study | None = None,
    differentials_text: str | None = None,
    structured_text: str | None = None,
) -> StructuredReport:
    """Fill the structured report from a model output, its study, and optional follow-up answers.

    `differentials_text` is the answer to "Provide differentials." (a list); `structured_text` the answer to
    "Write a structured report." (headed sections), used for sections the output lacks. Comparison and technique
    come from the study only, never from model text. Differentials and recommendations are kept only where the
    answer is what the section claims (`check_differentials`, `recommendations`); what is left out is said in
    `warnings`, after the output's own warnings.
    """
    sections = parse_structured_text(structured_text) if structured_text else {}
    findings_text = output.findings or sections.get("findings")
    impression_text = output.impression or sections.get("impression")
    if not findings_text and not impression_text and output.answer and output.task == Task.REPORT:
        findings_text, impression_text = parse_report(output.answer)
    views = _views(study)
    report = StructuredReport(
        technique=technique_text(views, study),
        comparison=comparison_text(study),
        findings=assign_regions(split_sentences(findings_text or "")),
        impression=impression_items(impression_text or ""),
        boxes=list(output.boxes),
        views=views,
        image_size=output.image_size,
        model=output.model,
        disclaimer=output.disclaimer or DISCLAIMER,
        model_notice=output.model_notice,
    )
    impression_sentences = [s for item in report.impression for s in split_sentences(item)]
    text_sentences = split_sentences(findings_text or "") + impression_sentences
    listed = differentials_text or sections.get("differentials") or "\n".join(f"- {d}" for d in output.differentials)
    report.differentials, left_out = check_differentials(listed, split_sentences(findings_text or ""))
    report.recommendations, dropped = recommendations(sections.get("recommendations"), text_sentences)
    report.positive_findings, box_warnings = positive_findings(output, text_sentences)
    report.warnings = list(dict.fromkeys(output.warnings + left_out + dropped + box_warnings))
    report.critical_findings = critical_flags(text_sentences, output)
    validate_structured(report.to_dict())
    return report


def parse_structured_text(text: str) -> dict[str, str]:
    """Headed sections of a structured answer ("Impression: ..."), merged per section of STRUCTURED_HEADERS."""
    sections: dict[str, list[str]] = {}
    matches = [m for m in _HEADER.finditer(text) if m.group(1).strip().lower() in STRUCTURED_HEADERS]
    for match, after in zip(matches, [*matches[1:], None], strict=True):
        body = text[match.end(): after.start() if after else len(text)].strip()
        if body:
            sections.setdefault(STRUCTURED_HEADERS[match.group(1).strip().lower()], []).append(body)
    return {name: "\n".join(parts) for name, parts in sections.items()}


def split_sentences(text: str) -> list[str]:
    """Sentences of free text ("4.5 cm" stays whole), list markers stripped."""
    parts = (_NUMBERED.sub("", part).strip() for part in _SENTENCE_END.split(text or ""))
    return [part for part in parts if part.strip(" .")]


def impression_items(text: str) -> list[str]:
    """The impression as a list: its numbered/bulleted items when it has them, else its sentences."""
    if _NUMBERED.search(text):
        return parse_list(text)
    return split_sentences(text)


@cache
def _region_patterns() -> dict[str, re.Pattern]:
    return {region: re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE)
            for region, words in REGION_KEYWORDS.items()}


def region_of(sentence: str) -> str:
    """The region whose keyword appears earliest in the sentence ("other" when none does)."""
    hits = [(m.start(), order, region) for order, (region, pattern) in enumerate(_region_patterns().items())
            if (m := pattern.search(sentence))]
    return min(hits)[2] if hits else "other"


def assign_regions(sentences: list[str]) -> dict[str, list[str]]:
    regions: dict[str, list[str]] = {region: [] for region in REGIONS}
    for sentence in sentences:
        regions[region_of(sentence)].append(sentence)
    return regions


def _views(study: Study | None) -> list[str]:
    if study is None:
        return []
    return [image.view_position for image in study.images if image.view_position]


VIEW_NAMES = {"PA": "PA", "AP": "AP", "LL": "left lateral", "RL": "right lateral", "LATERAL": "lateral"}


def technique_text(views: list[str], study: Study | None) -> str:
    """"PA and lateral views of the chest." from the study's view positions; never guessed."""
    n_images = len(study.images) if study else 0
    names = list(dict.fromkeys(VIEW_NAMES.get(v, v) for v in views))
    if not names:
        if n_images:
            return f"{_count(n_images)} of the chest; view position not recorded."
        return "Chest radiograph; views not recorded."
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    noun = "view" if len(names) == 1 else "views"
    return f"{joined} {noun} of the chest."


def _count(n: int) -> str:
    return "Single view" if n == 1 else f"{n} views"


def comparison_text(study: Study | None) -> str:
    """What was compared, from the study alone: never invented from model text."""
    if study is None or (study.prior is None and not study.prior_report):
        return NO_COMPARISON
    if study.prior is not None and study.prior_report:
        return "Prior radiograph and its report were provided for comparison."
    if study.prior is not None:
        return "Prior radiograph was provided for comparison (no prior report)."
    return "Prior report text was provided for comparison (no prior images)."


def parse_differential(item: str) -> Differential:
    """"Pneumonia (likely)", "Less likely: edema", "possible aspiration" -> name and high/medium/low."""
    lowered = item.lower()
    for words, level in LIKELIHOOD_WORDS:
        if re.search(rf"\b{re.escape(words)}\b", lowered):
            name = re.sub(rf"\b{re.escape(words)}\b", " ", item, flags=re.IGNORECASE)
            return Differential(diagnosis=_clean_item(name), likelihood=level)
    return Differential(diagnosis=_clean_item(item))


def _clean_item(text: str) -> str:
    text = re.sub(r"\(\s*\)|\b(?:is|are)\b\s*$", " ", text.strip())
    return re.sub(r"\s+", " ", text).strip(" .:;,-()\u2013\u2014")


def check_differentials(answer: str, findings: list[str] = ()) -> tuple[list[Differential], list[str]]:
    """The differentials an answer lists, and warnings for what it holds that is not one.

    Only the answer span is read (after `<think>`, inside `<answer>` or `\\boxed{}`). An answer that is a report
    (Findings:/Impression: sections) gives none; so does one where no item names a diagnosis (`not_a_diagnosis`):
    the section is left out rather than filled with "Yes" or a repeat of the findings.
    """
    text = split_reasoning(answer).answer if answer.strip() else ""
    if not text:
        return [], []
    quoted = _quoted(text)
    if re.search(r"^\s*(?:findings|impression)\s*:", text, re.IGNORECASE | re.MULTILINE):
        return [], [f"differentials left out: the answer {quoted} is a report, not a list of diagnoses"]
    kept, dropped = [], []
    for item in parse_list(text):
        differential = parse_differential(item)
        reason = not_a_diagnosis(differential.diagnosis, findings)
        if reason:
            dropped.append(f"{_quoted(item)} ({reason})")
        else:
            kept.append(differential)
    if not kept:
        return [], [f"differentials left out: the answer {quoted} is not a list of diagnoses"]
    if dropped:
        return kept, [f"differentials: left out items that are not diagnoses: {'; '.join(dropped)}"]
    return kept, []


def not_a_diagnosis(name: str, findings: list[str] = ()) -> str | None:
    """Why a differential item is not the name of a diagnosis (None when it is one)."""
    words = name.split()
    if not words or re.fullmatch(rf"(?:{YES_NO})\W*", name, re.IGNORECASE):
        return "a yes/no answer"
    if re.fullmatch(rf"(?:{NOTHING})\W*", name, re.IGNORECASE):
        return "names no diagnosis"
    if name.rstrip().endswith("?") or _same(name, *_differential_questions()):
        return "the question"
    if _same(name, *findings):
        return "a findings sentence"
    if len(words) > MAX_DIAGNOSIS_WORDS or re.search(r"[.:]\s+\S", name):
        return "a sentence"
    from cxrlm.data.labeler import NEGATIVE, explain  # lazy: the labeler compiles its lexicon on first use

    mentions = explain(name)
    if mentions and all(mention.status == NEGATIVE for mention in mentions):
        return "a negated finding"
    if (mentions or normalize_label(name) not in (None, "No Finding")
            or re.search(r"\b(?:" + "|".join(DIAGNOSIS_TERMS) + r")\b", name, re.IGNORECASE)):
        return None
    return "no known diagnosis"


@cache
def _differential_questions() -> tuple[str, ...]:
    from cxrlm.prompts.templates import DIALECTS

    return tuple(dialect.differentials for dialect in DIALECTS.values())


def _same(text: str, *others: str) -> bool:
    """Equal once case, spacing and punctuation are set aside (a repeat, not a new statement)."""
    def key(value: str) -> str:
        return " ".join(re.findall(r"\w+", value.lower()))

    return any(key(text) == key(other) for other in others if other)


def _quoted(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def recommendations(section: str | None, sentences: list[str]) -> tuple[list[str], list[str]]:
    """Items of a "Recommendations:" section that name an action, plus report sentences that recommend one; and
    warnings for section items left out. A report sentence without an action is a finding, not a recommendation."""
    items, warnings = [], []
    for item in impression_items(section or ""):
        if re.search(RECOMMENDED_ACTIONS, item, re.IGNORECASE):
            items.append(item)
        else:
            warnings.append(f"recommendations: left out {_quoted(item)} (no action to take)")
    items += [s for s in sentences if re.search(RECOMMENDATION_CUES, s, re.IGNORECASE)
              and re.search(RECOMMENDED_ACTIONS, s, re.IGNORECASE)]
    return list(dict.fromkeys(items)), warnings


def _labeler():
    from cxrlm.data.labeler import label_report  # lazy: the labeler compiles its lexicon on first use

    return label_report


CERTAINTY = {1: "present", -1: "uncertain"}


def sentence_labels(sentence: str) -> dict[str, str]:
    """CheXpert labels a sentence states as present or uncertain (negated ones are left out)."""
    labels = _labeler()(sentence)
    return {name: CERTAINTY[v] for name, v in labels.items() if v in CERTAINTY and name != "No Finding"}


def box_label(box: Box) -> str | None:
    """The CheXpert label a box's free-text label names: normalized name, else what the labeler reads in it."""
    name = normalize_label(box.label) if box.label else None
    if name is None and box.label:
        found = sentence_labels(box.label)
        name = next(iter(found), None)
    return name


def positive_findings(output: ModelOutput, sentences: list[str]) -> tuple[list[PositiveFinding], list[str]]:
    """Positive findings from the text (labeler) and the model's labels, each linked to its boxes."""
    found: dict[str, PositiveFinding] = {}
    for sentence in sentences:
        for label, certainty in sentence_labels(sentence).items():
            if label not in found or (certainty == "present" and found[label].certainty != "present"):
                found[label] = PositiveFinding(label, _label_region(label, sentence), certainty, evidence=sentence)
    for label in output.labels:
        name = normalize_label(label.name)
        if label.present and name and name != "No Finding" and name not in found:
            found[name] = PositiveFinding(name, LABEL_REGIONS.get(name, "lungs"), "present")
    for finding in found.values():
        finding.probability = _probability(output, finding.label)
    warnings = _link_boxes(output.boxes, found)
    return list(found.values()), warnings


def _label_region(label: str, sentence: str) -> str:
    return LABEL_REGIONS.get(label) or (region_of(sentence) if region_of(sentence) != "other" else "lungs")


def _probability(output: ModelOutput, name: str) -> float | None:
    for label in output.labels:
        if normalize_label(label.name) == name and label.probability is not None:
            return label.probability
    return output.probabilities.get(name)


def _link_boxes(boxes: list[Box], found: dict[str, PositiveFinding]) -> list[str]:
    warnings = []
    for index, box in enumerate(boxes):
        name = box_label(box)
        if name in found:
            found[name].boxes.append(index)
        else:
            warnings.append(f"box {index} ({box.label or 'unlabelled'!r}) matches no positive finding")
    return warnings


def _clauses(sentence: str) -> list[str]:
    return [c for c in re.split(CLAUSE_BREAK, sentence, flags=re.IGNORECASE) if c and c.strip()]


def rule_status(term: str, sentence: str) -> str | None:
    """"present", "uncertain" or None (absent or negated) for one rule term, clause by clause."""
    status = None
    for clause in _clauses(sentence):
        match = re.search(term, clause, re.IGNORECASE)
        if not match:
            continue
        before = re.sub(PSEUDO_NEGATION, " ", clause[: match.start()], flags=re.IGNORECASE)
        before = " ".join(before.split()[-NEGATION_WINDOW_WORDS:])
        after = clause[match.end():]
        if _negated_before(before) or re.match(rf"\W*{NEGATION_AFTER}", after, re.IGNORECASE):
            continue
        if re.search(UNCERTAIN, clause, re.IGNORECASE):
            status = status or "uncertain"
        else:
            return "present"
    return status


def _negated_before(before: str) -> bool:
    """A cue negates the term unless a comma starts a new, non-list item in between ("No X, large Y")."""
    cues = list(re.finditer(NEGATION_BEFORE, before, re.IGNORECASE))
    if not cues:
        return False
    tail = before[cues[-1].end():]
    return "," not in tail or bool(re.search(r"\b(?:or|nor|and)\b", tail.rsplit(",", 1)[1], re.IGNORECASE))


def critical_flags(sentences: list[str], output: ModelOutput | None = None) -> list[CriticalFlag]:
    """Critical findings stated (not negated) in the sentences, or named by the model's own labels."""
    flags = []
    for name, spec in CRITICAL_FINDINGS.items():
        flag = _flag_from_text(name, spec, sentences) or _flag_from_labels(name, spec, output)
        if flag:
            flags.append(flag)
    return flags


def _flag_from_text(name: str, spec: dict, sentences: list[str]) -> CriticalFlag | None:
    best = None
    for sentence in sentences:
        certainty, source = _sentence_certainty(spec, sentence)
        if certainty and (best is None or (certainty == "present" and best.certainty != "present")):
            best = CriticalFlag(name, spec["display"], certainty, source, evidence=sentence)
    return best


def _sentence_certainty(spec: dict, sentence: str) -> tuple[str | None, str]:
    if spec.get("labels"):
        stated = sentence_labels(sentence)
        certainties = [stated[label] for label in spec["labels"] if label in stated]
        if certainties:
            return ("present" if "present" in certainties else "uncertain"), "labeler"
    for term in spec.get("rules", ()):
        status = rule_status(term, sentence)
        if status:
            return status, "rule"
    return None, ""


def _flag_from_labels(name: str, spec: dict, output: ModelOutput | None) -> CriticalFlag | None:
    """A model label such as "Pneumothorax" raises its flag even when no sentence states it: better safe."""
    if output is None:
        return None
    for label in output.labels:
        if label.present and normalize_label(label.name) in spec.get("labels", ()):
            return CriticalFlag(name, spec["display"], "present", "model_label")
    return None


def render_markdown(report: StructuredReport) -> str:
    """The report as Markdown, research-use notice first."""
    lines = [f"> **{report.disclaimer}**", ""]
    if report.model_notice:
        lines += [f"> **Model notice:** {report.model_notice}", ""]
    lines += ["# Chest radiograph: structured report", ""]
    if report.critical_findings:
        lines += ["## Critical findings", ""]
        lines += [f"- **{f.display}** ({f.certainty})" + (f": {f.evidence}" if f.evidence else "")
                  for f in report.critical_findings]
        lines.append("")
    lines += ["## Technique", "", report.technique, "", "## Comparison", "", report.comparison, "", "## Findings", ""]
    for region, title in REGIONS.items():
        sentences = report.findings.get(region, [])
        if sentences or region != "other":
            lines.append(f"- **{title}:** " + (" ".join(sentences) if sentences else "Not described."))
    lines += ["", "## Impression", ""]
    lines += [f"{i}. {item}" for i, item in enumerate(report.impression, 1)] or ["Not provided."]
    lines += _markdown_positive(report) + _markdown_differentials(report)
    if report.recommendations:
        lines += ["", "## Recommendations", ""] + [f"- {item}" for item in report.recommendations]
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {warning}" for warning in report.warnings]
    lines += ["", f"_Model: {report.model or 'unknown'}. Preliminary, unverified machine output._", ""]
    return "\n".join(lines)


def _markdown_positive(report: StructuredReport) -> list[str]:
    if not report.positive_findings:
        return []
    lines = ["", "## Positive findings", "", "| Finding | Certainty | Probability | Boxes (x1, y1, x2, y2 px) |",
             "|---|---|---|---|"]
    for f in report.positive_findings:
        prob = f"{f.probability:.2f}" if f.probability is not None else "-"
        boxes = "; ".join(str(tuple(round(v) for v in report.boxes[i].xyxy)) for i in f.boxes) or "-"
        lines.append(f"| {f.label} | {f.certainty} | {prob} | {boxes} |")
    return lines


def _markdown_differentials(report: StructuredReport) -> list[str]:
    if not report.differentials:
        return []
    return ["", "## Differentials", ""] + [
        f"- {d.diagnosis}" + (f" (likelihood: {d.likelihood})" if d.likelihood else "") for d in report.differentials
    ]


def as_structured(report_or_output: StructuredReport | ModelOutput, study: Study | None = None,
                  **texts: str | None) -> StructuredReport:
    """A StructuredReport as is; a ModelOutput built into one (exporters accept either)."""
    if isinstance(report_or_output, StructuredReport):
        return report_or_output
    if isinstance(report_or_output, ModelOutput):
        return build_structured_report(report_or_output, study, **texts)
    raise TypeError(f"expected a StructuredReport or ModelOutput, got {type(report_or_output).__name__}")
