"""Rule-based, negation- and uncertainty-aware labeler of free-text chest X-ray reports.

A report is split into sections (FINDINGS / IMPRESSION; indication, history and comparison are
ignored), the sections into sentences, and each sentence is searched for mentions of the concepts of
the lexicon in `cxrlm/data/lexicon/findings.json`. Each mention gets a status from the context cues
of `lexicon/modifiers.json` (NegEx/ConText style: "no", "without", "cannot exclude", "versus",
"has resolved"; stability phrases such as "no change in" are not negations), and the mentions are
merged per label of a vocabulary (NIH 14 + `normal`, or CheXpert 14 with `No Finding`):
1 positive, 0 negative, -1 uncertain, None not mentioned.

It does not parse syntax, resolve coreference ("it has resolved") or read the indication; it is a
deterministic, pure and cheap function (thousands of reports per second on one core) meant for
label-based metrics, rewards and flags, not for diagnosis.
"""

from __future__ import annotations

import bisect
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

from cxrlm.errors import ConfigError
from cxrlm.pathologies import NIH14, VOCABULARIES

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
STATUS_NAMES = {POSITIVE: "positive", NEGATIVE: "negative", UNCERTAIN: "uncertain", None: "not mentioned"}

# The "no abnormality" label of each vocabulary, and labels that do not make a study abnormal
# (CheXpert's convention: support devices do not cancel "No Finding").
SUMMARY_LABEL = {"chexpert14": "No Finding", "nih14": "normal"}
NOT_ABNORMAL = {"No Finding", "normal", "Support Devices"}

# When mentions of one label disagree, a positive mention wins, then an uncertain one, then a negative.
_RANK = {None: 0, NEGATIVE: 1, UNCERTAIN: 2, POSITIVE: 3}


@dataclass(frozen=True)
class Mention:
    """One mention of a lexicon concept and the decision made about it (for explaining a label)."""

    concept: str
    status: int
    start: int
    end: int
    text: str
    section: str
    cue: str | None = None  # the cue or phrase that set a non-positive status


# ---------------------------------------------------------------- lexicon compilation

# Phrases end with \b when they end with a word character or a group, else with a boundary that
# also works after punctuation ("vs."). They get no \b in front: a leading \b stops Python's regex
# engine from scanning for the literal prefix (about 30 times slower), so concept matches that begin
# inside a word are dropped by `_starts_word`, and cues are only tried at word starts (`_Lexicon.cues`).
_RIGHT = r"(?:(?!\w)|(?<!\w))"
_MACRO = re.compile(r"\{([a-z_]+)\}")


def _expand(pattern: str, macros: Mapping[str, str]) -> str:
    while _MACRO.search(pattern):
        pattern = _MACRO.sub(lambda m: macros[m.group(1)], pattern)
    return pattern


def _whitespace(pattern: str) -> str:
    """Lexicon phrases write a space for any run of whitespace (" ?" for optional whitespace)."""
    out, in_class, i = [], False, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == " " and not in_class:
            optional = pattern[i + 1 : i + 2] == "?"
            out.append(r"\s*" if optional else r"\s+")
            i += 2 if optional else 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _bounded(phrase: str) -> str:
    right = r"\b" if phrase[-1:].isalnum() or phrase[-1:] == ")" else _RIGHT
    return f"(?:{phrase}){right}"


def _starts_word(text: str, start: int) -> bool:
    return start == 0 or not _is_word(text[start - 1]) or not _is_word(text[start])


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _alternation(patterns: Iterable[str], macros: Mapping[str, str]) -> str:
    return "|".join(_bounded(_whitespace(_expand(p, macros))) for p in patterns)


def _compile(patterns: list[str] | None, macros: Mapping[str, str]) -> re.Pattern | None:
    return re.compile(_alternation(patterns, macros)) if patterns else None


@dataclass(frozen=True)
class _Concept:
    name: str
    labels: Mapping[str, str | None]
    mentions: re.Pattern | None
    negative: re.Pattern | None
    uncertain: re.Pattern | None
    exclude: re.Pattern | None


# Cue kinds in matching priority (at one position the first kind that matches wins): stability
# phrases before the negations they contain, "cannot be excluded" before "not", "is not seen" before "not".
_CUE_KINDS = (
    "pseudo",
    "uncertainty_post",
    "negation_post",
    "negation_both",
    "uncertainty_both",
    "uncertainty_pre",
    "uncertainty_link",
    "negation_pre",
    "terminators",
)


@dataclass(frozen=True)
class _Lexicon:
    concepts: tuple[_Concept, ...]
    labels: Mapping[str, Mapping[str, str | None]]  # concept name -> {vocabulary: label or None}
    # Every phrase of a concept contains one of its keywords: finding the keywords tells which
    # sentences can mention which concepts, so most concept regexes never run.
    keyword_concepts: Mapping[str, tuple[int, ...]]
    # One named group per cue kind, then single words, so the cues are only tried at word starts.
    cues: re.Pattern
    window: Mapping[str, int]


def _read_json(name: str) -> dict:
    return json.loads(resources.files("cxrlm.data").joinpath("lexicon", name).read_text(encoding="utf-8"))


@functools.cache
def _lexicon() -> _Lexicon:
    findings, modifiers = _read_json("findings.json"), _read_json("modifiers.json")
    macros, specs = findings["macros"], findings["concepts"]
    concepts = tuple(
        _Concept(
            name=name,
            labels=spec["labels"],
            mentions=_compile(spec.get("mentions"), macros),
            negative=_compile(spec.get("negative"), macros),
            uncertain=_compile(spec.get("uncertain"), macros),
            exclude=_compile(spec.get("exclude"), macros),
        )
        for name, spec in specs.items()
    )
    keywords = sorted({k for spec in specs.values() for k in spec["keywords"]})
    keyword_concepts = {
        keyword: tuple(i for i, spec in enumerate(specs.values()) if keyword in spec["keywords"])
        for keyword in keywords
    }
    groups = "|".join(f"(?P<{kind}>{_alternation(modifiers[kind], modifiers['macros'])})" for kind in _CUE_KINDS)
    return _Lexicon(
        concepts=concepts,
        labels={c.name: c.labels for c in concepts},
        keyword_concepts=keyword_concepts,
        cues=re.compile(rf"{groups}|\w+|\s+|[^\w\s]"),
        window=modifiers["window"],
    )


# ---------------------------------------------------------------- sections and sentences

_KEPT_SECTIONS = {
    "findings": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "opinion": "impression",
    "interpretation": "impression",
}
_SKIPPED_SECTIONS = (
    "indications?|(?:clinical )?history|clinical (?:information|indication|data|details)|reason for "
    "(?:exam|examination|study)|comparisons?|technique|examination|exam|procedure|type of examination|"
    "recommendations?|notification|signed by|dictated by"
)
_HEADER = re.compile(
    rf"(?:(?<![\w])({'|'.join(_KEPT_SECTIONS)}|{_SKIPPED_SECTIONS})[ \t]*:|^[ \t]*({'|'.join(_KEPT_SECTIONS)})[ \t]*$)",
    re.IGNORECASE | re.MULTILINE,
)
# A sentence ends at . ! ? before whitespace, at a blank line, and at a line break before a list item
# or a capitalised word (one finding per line); other line breaks are wrapping inside a sentence.
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n[ \t]*\n|\n(?=[ \t]*(?:(?:\d{1,2}[.)]|[-*\u2022])\s|[A-Z][a-z]))")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_ABBREVIATION = re.compile(r"(?:^|\W)(?:vs|dr|e\.g|i\.e|approx|cf|mr|mrs|ms|fig)\.$", re.IGNORECASE)
_WORD = re.compile(r"[\w'/-]+")


def _sections(text: str) -> list[tuple[str, int, int]]:
    """(section, start, end) spans to label: FINDINGS and IMPRESSION if present, else the whole text
    less the sections that are not about the image (indication, history, comparison...).

    A skipped section ends at the next header or blank line; what follows it is labeled.
    """
    headers = [(m.start(), m.end(), (m.group(1) or m.group(2)).lower()) for m in _HEADER.finditer(text)]
    if not headers:
        return [("report", 0, len(text))]
    kept, other = [], [("report", 0, headers[0][0])]
    for i, (_, body, name) in enumerate(headers):
        end = headers[i + 1][0] if i + 1 < len(headers) else len(text)
        if name in _KEPT_SECTIONS:
            kept.append((_KEPT_SECTIONS[name], body, end))
            continue
        blank = _BLANK_LINE.search(text, body, end)
        if blank:
            other.append(("report", blank.end(), end))
    return kept or [span for span in other if text[span[1] : span[2]].strip()]


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans, begin = [], start
    for match in _SENTENCE_END.finditer(text, start, end):
        if match.group() == "." and _ABBREVIATION.search(text, max(begin, match.start() - 8), match.end()):
            continue
        if text[begin : match.end()].strip():
            spans.append((begin, match.end()))
        begin = match.end()
    if text[begin:end].strip():
        spans.append((begin, end))
    return spans


# ---------------------------------------------------------------- mentions and their status


def _spans(pattern: re.Pattern | None, text: str, start: int, end: int) -> list[tuple[int, int]]:
    if pattern is None:
        return []
    return [m.span() for m in pattern.finditer(text, start, end) if _starts_word(text, m.start())]


def _inside(span: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    return any(a <= span[0] and span[1] <= b for a, b in others)


def _overlaps(span: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    return any(span[0] < b and a < span[1] for a, b in others)


def _concept_spans(concept: _Concept, text: str, start: int, end: int) -> list[tuple[int, int, int | None]]:
    """(start, end, fixed status or None) of each mention of one concept in a sentence."""
    negative = _spans(concept.negative, text, start, end)
    uncertain = _spans(concept.uncertain, text, start, end)
    stated = [(a, b, NEGATIVE) for a, b in negative] + [(a, b, UNCERTAIN) for a, b in uncertain]
    free = _spans(concept.mentions, text, start, end)
    if free and (concept.exclude or stated):
        excluded, fixed = _spans(concept.exclude, text, start, end), negative + uncertain
        free = [span for span in free if not _inside(span, excluded) and not _overlaps(span, fixed)]
    return stated + [(a, b, None) for a, b in free]


@dataclass(frozen=True)
class _Cue:
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class _Context:
    """One sentence of the lowercased report and the cues found in it."""

    text: str
    start: int
    end: int
    cues: tuple[_Cue, ...]
    window: Mapping[str, int]

    def words(self, start: int, end: int) -> int:
        return len(_WORD.findall(self.text, start, end)) if end > start else 0

    def blocked(self, start: int, end: int, kinds: tuple[str, ...]) -> bool:
        return any(cue.kind in kinds and start <= cue.start and cue.end <= end for cue in self.cues)

    def joins_list(self, start: int, end: int) -> bool:
        """A backward scope crosses a comma only inside a list: "A, B or C is not seen", not "A, B not seen"."""
        return "," not in self.text[start:end] or bool(_CONJUNCTION.search(self.text, start, end))


def _context(text: str, start: int, end: int, lexicon: _Lexicon) -> _Context:
    cues = tuple(_Cue(m.lastgroup, m.start(), m.end()) for m in lexicon.cues.finditer(text, start, end) if m.lastgroup)
    return _Context(text, start, end, cues, lexicon.window)


_CONJUNCTION = re.compile(r"\b(?:or|nor|and)\b")

# Cues that end a scope early: a new hedge ends a negation ("no pneumothorax, possible effusion"), and
# "less likely" only reaches its nearest neighbours.
_BREAKERS = {
    "negation_pre": ("terminators", "uncertainty_pre"),
    "negation_both": ("terminators", "uncertainty_pre"),
    "uncertainty_both": ("terminators", "uncertainty_pre", "uncertainty_link", "negation_pre"),
}


def _covers(cue: _Cue, span: tuple[int, int], context: _Context) -> bool:
    """Whether the scope of a cue reaches a mention in the same sentence."""
    start, end = span
    if start <= cue.start and cue.end <= end:  # a cue inside the phrase: "heart is not enlarged"
        return True
    breakers = _BREAKERS.get(cue.kind, ("terminators",))
    both = cue.kind.endswith("_both")
    if cue.end <= start and cue.kind.endswith(("_pre", "_link", "_both")):
        return context.words(cue.end, start) <= context.window["both" if both else "pre"] and not context.blocked(
            cue.end, start, breakers
        )
    if end <= cue.start and cue.kind.endswith(("_post", "_both")):
        return (
            context.words(end, cue.start) <= context.window["both" if both else "post"]
            and not context.blocked(end, cue.start, breakers)
            and context.joins_list(end, cue.start)
        )
    return False


def _status(span: tuple[int, int], context: _Context) -> tuple[int, tuple[int, int] | None]:
    """The status of a mention and the span of the cue that set it."""
    negation = uncertainty = None
    for cue in context.cues:
        if cue.kind in ("pseudo", "terminators") or not _covers(cue, span, context):
            continue
        if cue.kind.startswith("negation"):
            negation = negation or cue
        else:
            uncertainty = uncertainty or cue
    if negation:  # "no opacity to suggest pneumonia": the negation outranks the hedge inside it
        return NEGATIVE, (negation.start, negation.end)
    if uncertainty:
        return UNCERTAIN, (uncertainty.start, uncertainty.end)
    return POSITIVE, None


def _compose(text: str | None, findings: str | None, impression: str | None) -> tuple[str, list[tuple[str, int, int]]]:
    if text is not None and (findings is not None or impression is not None):
        raise ValueError("pass either text or findings/impression, not both")
    if text is not None:
        return text, _sections(text)
    parts, spans, offset = [], [], 0
    for name, part in (("findings", findings), ("impression", impression)):
        if part:
            spans.append((name, offset, offset + len(part)))
            parts.append(part)
            offset += len(part) + 2
    return "\n\n".join(parts), spans


def _lower(text: str) -> str:
    """Lowercase without moving offsets (a few characters, such as "\u0130", lowercase to two)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def explain(text: str | None = None, *, findings: str | None = None, impression: str | None = None) -> list[Mention]:
    """Every concept mention in a report with its status and the cue that decided it, in text order.

    Offsets refer to `text`, or to findings and impression joined by a blank line.
    """
    original, sections = _compose(text, findings, impression)
    text = _lower(original)  # the lexicon is lowercase: matching without re.IGNORECASE is much faster
    lexicon = _lexicon()
    sentences = [(name, *span) for name, start, end in sections for span in _sentences(original, start, end)]
    mentions = []
    for index, concepts in _candidates(text, sentences, lexicon).items():
        section, start, end = sentences[index]
        context = None
        for concept in sorted(concepts):
            concept = lexicon.concepts[concept]
            for a, b, fixed in _concept_spans(concept, text, start, end):
                if fixed is None:
                    context = context or _context(text, start, end, lexicon)
                    status, cue = _status((a, b), context)
                else:
                    status, cue = fixed, (a, b)
                cue_text = original[cue[0] : cue[1]].strip() if cue else None
                mentions.append(Mention(concept.name, status, a, b, original[a:b], section, cue_text))
    return sorted(mentions, key=lambda m: (m.start, m.end, m.concept))


def _candidates(text: str, sentences: list[tuple[str, int, int]], lexicon: _Lexicon) -> dict[int, set[int]]:
    """Sentence index -> indices of the concepts whose keywords occur in it."""
    starts = [start for _, start, _ in sentences]
    out: dict[int, set[int]] = {}
    for keyword, concepts in lexicon.keyword_concepts.items():  # str.find is far faster than one big regex
        position = text.find(keyword)
        while position != -1:
            index = bisect.bisect_right(starts, position) - 1
            if index >= 0 and position < sentences[index][2]:
                out.setdefault(index, set()).update(concepts)
            position = text.find(keyword, position + len(keyword))
    return out


def _check_vocab(vocab: str) -> tuple[str, ...]:
    if vocab not in VOCABULARIES:
        raise ConfigError(f"unknown label vocabulary {vocab!r}; use one of: {', '.join(VOCABULARIES)}")
    return VOCABULARIES[vocab]


def label_names(vocab: str = "chexpert14") -> tuple[str, ...]:
    """The keys of a label dict: the vocabulary's labels, plus "normal" for nih14."""
    labels = _check_vocab(vocab)
    return labels if SUMMARY_LABEL[vocab] in labels else (*labels, SUMMARY_LABEL[vocab])


def label_mentions(
    mentions: Iterable[Mention], vocab: str = "chexpert14", *, empty: bool = False
) -> dict[str, int | None]:
    """Merge mentions into one value per label of `vocab` (plus its "no finding" label)."""
    labels = _check_vocab(vocab)
    summary = SUMMARY_LABEL[vocab]
    concept_labels = _lexicon().labels
    out: dict[str, int | None] = dict.fromkeys(label_names(vocab))
    for mention in mentions:
        label = concept_labels[mention.concept].get(vocab)
        if label and _RANK[mention.status] > _RANK[out[label]]:
            out[label] = mention.status
    abnormal = any(out[label] in (POSITIVE, UNCERTAIN) for label in labels if label not in NOT_ABNORMAL)
    out[summary] = None if empty else (NEGATIVE if abnormal else POSITIVE)
    return out


def label_report(
    text: str | None = None, *, findings: str | None = None, impression: str | None = None, vocab: str = "chexpert14"
) -> dict[str, int | None]:
    """Label one report: {label: 1 positive, 0 negative, -1 uncertain, None not mentioned}.

    Give the whole report as `text` (FINDINGS / IMPRESSION headers are honoured, other sections
    ignored) or its `findings` and `impression` separately. `vocab` is "chexpert14" (with
    "No Finding") or "nih14" (with "normal"); the summary label is 1 when no finding label is
    positive or uncertain, 0 otherwise, and None for an empty report.
    """
    _check_vocab(vocab)
    mentions = explain(text, findings=findings, impression=impression)
    empty = not any(part and part.strip() for part in (text, findings, impression))
    return label_mentions(mentions, vocab, empty=empty)


def label_reports(texts: Iterable[str | Mapping[str, str | None] | None], vocab: str = "chexpert14") -> list[dict]:
    """Label many reports; each is a text, None, or a mapping with "findings" and/or "impression"."""
    _check_vocab(vocab)
    out = []
    for report in texts:
        if isinstance(report, Mapping):
            out.append(label_report(findings=report.get("findings"), impression=report.get("impression"), vocab=vocab))
        else:
            out.append(label_report(report, vocab=vocab))
    return out


# ---------------------------------------------------------------- evaluation against hand-checked labels


def evaluate_gold(path: str, split: str = "all") -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and counts per NIH label on a CSV of reports with 0/1 gold columns.

    The CSV has `findings` and `impression` columns and one 0/1 column per NIH-14 label (plus
    `normal`), like the OpenI gold standard; uncertain and unmentioned count as 0, as there. `split`
    is "all", or "even"/"odd" to score only the rows with an even/odd `uid` (a development split).
    "micro" pools the 14 findings; "micro_present" pools those with at least one gold positive.
    """
    import csv

    from cxrlm.errors import InputError

    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if _in_split(row, split)]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, ValueError) as err:
        raise InputError(
            f"{path}: cannot read gold labels ({err}); give a CSV with uid, findings, impression"
        ) from None
    columns = [label for label in (*NIH14, "normal") if rows and label in rows[0]]
    counts = {label: [0, 0, 0] for label in columns}  # tp, fp, fn
    for row in rows:
        predicted = label_report(findings=row.get("findings"), impression=row.get("impression"), vocab="nih14")
        for label in columns:
            guess, truth = predicted[label] == POSITIVE, row[label].strip() == "1"
            counts[label][0] += guess and truth
            counts[label][1] += guess and not truth
            counts[label][2] += truth and not guess
    scores = {label: _prf(*counts[label]) for label in columns}
    findings = [label for label in columns if label in NIH14]
    present = [label for label in findings if counts[label][0] + counts[label][2]]
    scores["micro"] = _prf(*(sum(counts[label][i] for label in findings) for i in range(3)))
    scores["micro_present"] = _prf(*(sum(counts[label][i] for label in present) for i in range(3)))
    scores["macro"] = {
        k: sum(scores[label][k] for label in findings) / max(len(findings), 1) for k in ("precision", "recall", "f1")
    }
    scores["reports"] = {"n": len(rows)}
    return scores


def _in_split(row: Mapping[str, str], split: str) -> bool:
    if split == "all":
        return True
    return (int(row["uid"]) % 2 == 0) == (split == "even")


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "support": tp + fn}


def score_table(scores: Mapping[str, Mapping[str, float]]) -> str:
    """`evaluate_gold`'s scores as a Markdown table (`cxrlm label GOLD.csv --evaluate`)."""
    lines = ["| label | precision | recall | F1 | gold positives | predicted positives |", "|---|---|---|---|---|---|"]
    for label, s in scores.items():
        if label != "reports":
            counts = f"{s['support']} | {s['tp'] + s['fp']}" if "tp" in s else " | "
            lines.append(f"| {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {counts} |")
    return "\n".join(lines)


__all__ = [
    "NEGATIVE",
    "POSITIVE",
    "UNCERTAIN",
    "Mention",
    "evaluate_gold",
    "explain",
    "label_mentions",
    "label_names",
    "label_report",
    "label_reports",
]

