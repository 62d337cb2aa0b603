"""Instruction datasets from a manifest: SFT conversations and GRPO prompts for chest X-ray tasks.

Tasks: `reason` (NV-Reason-CXR style `<think>` review + `<answer>` label list), `report` (findings and
impression), `classify` (label list, or yes/no per label), `ground` (anatomy, finding or phrase boxes),
`vqa` (presence, normal or not, side, Brixia/severity scores) and `conversation` (several of those in
one multi-turn chat). Prompts come from the versioned templates in cxrlm/data/templates/, chosen with a
seeded RNG per image, so a build is reproducible and independent of record order.

Text that no radiologist wrote - the `<think>` reviews and reports templated from labels - is marked
`synthetic: true` in every example that contains it. Boxes are written in a `cxrlm.box_formats` format:
pixels of the STORED image (`pixels`, alias `qwen`), 0-1 fractions (`norm1`, RadVLM), 0-100 or 0-1000 integers
(`int100`, M4CXR; `int1000`, Qwen3-VL) or MedGemma 1.5's [y0, x0, y1, x1] in 0-1000 (`int1000_yxyx`).
Not here: tokenisation, image loading and the training loop (cxrlm.train).
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from cxrlm import box_formats
from cxrlm.data.manifest import ManifestRecord
from cxrlm.errors import ConfigError
from cxrlm.pathologies import CHEXPERT14
from cxrlm.types import FRONTAL_VIEWS, Task

TASKS = (Task.REASON, Task.REPORT, Task.CLASSIFY, Task.GROUND, Task.VQA, Task.CONVERSATION)
DEFAULT_MIX = {Task.REASON: 3, Task.REPORT: 2, Task.CLASSIFY: 2, Task.GROUND: 2, Task.VQA: 1, Task.CONVERSATION: 1}
FORMATS = ("sft", "grpo")
BOX_FORMATS = box_formats.NAMES  # every format can be written
TEMPLATES = "data/templates/instructions.json"


# ---------------------------------------------------------------- configuration


@dataclass
class InstructionConfig:
    """What to build. `mix` weights the tasks (renormalised over those an image supports)."""

    tasks: tuple[str, ...] = TASKS
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    format: str = "sft"
    box_format: str = "pixels"  # a cxrlm.box_formats name ("qwen" is an alias of "pixels")
    seed: int = 0
    per_image: int = 1  # examples drawn per image
    uncertain: str = "positive"  # CheXpert -1 in answers: "positive" (U-Ones) or "negative" (U-Zeros)
    splits: tuple[str, ...] = ("train", "val")

    def __post_init__(self):
        unknown = [t for t in (*self.tasks, *self.mix) if t not in TASKS]
        if unknown:
            raise ConfigError(f"unknown task {unknown[0]!r}; choose from: {', '.join(TASKS)}")
        if not self.tasks:
            raise ConfigError("--tasks is empty; name at least one of: " + ", ".join(TASKS))
        if self.format not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.box_format not in BOX_FORMATS:
            raise ConfigError(f"--box-format must be one of {', '.join(BOX_FORMATS)}, got {self.box_format!r}")
        if self.uncertain not in ("positive", "negative"):
            raise ConfigError(f"--uncertain must be positive or negative, got {self.uncertain!r}")
        if any(w < 0 for w in self.mix.values()) or not any(self.mix.get(t, 0) > 0 for t in self.tasks):
            raise ConfigError("--mix needs non-negative weights and at least one selected task above 0")
        if self.per_image < 1:
            raise ConfigError(f"--per-image must be at least 1, got {self.per_image}")


def parse_mix(text: str | None) -> dict[str, float]:
    """"reason=3,classify=2" -> DEFAULT_MIX updated with those weights."""
    mix = dict(DEFAULT_MIX)
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, sep, weight = item.partition("=")
        try:
            mix[name.strip()] = float(weight)
        except ValueError:
            raise ConfigError(f"--mix item {item!r} is not task=weight (e.g. reason=3,classify=2)") from None
        if not sep:
            raise ConfigError(f"--mix item {item!r} is not task=weight (e.g. reason=3,classify=2)")
    return mix


@lru_cache(maxsize=4)
def load_templates(path: str | None = None) -> dict[str, Any]:
    """The prompt templates (packaged file unless `path` is given); each has a `version`."""
    if path is None:
        text = resources.files("cxrlm").joinpath(TEMPLATES).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    templates = json.loads(text)
    for key in ("version", "prompts", "answers", "finding_phrases", "review", "sentences"):
        if key not in templates:
            raise ConfigError(f"template file {path or TEMPLATES} lacks {key!r}")
    return templates


# ---------------------------------------------------------------- boxes as text


def _norm(xyxy, size: tuple[int, int]) -> list[float]:
    width, height = size
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return [x1 / width, y1 / height, x2 / width, y2 / height]


def format_box(xyxy, size: tuple[int, int], fmt: str) -> str:
    """One box (pixels of the stored image) as text in format `fmt`, corners clipped to the image.

    `pixels` (`qwen`) writes integer pixels of the STORED image, NOT of Qwen2.5-VL's resized input: a trainer that
    resizes must rescale, see docs/DATA.md.
    """
    return box_formats.get(fmt).write(_norm(xyxy, size), size)


def format_boxes(boxes: list[dict], size: tuple[int, int], fmt: str, label: str) -> str:
    """Boxes of one target as the format's writer lists them: a JSON list of {"bbox_2d"/"box_2d", "label"} for
    the Qwen and MedGemma 1.5 formats, else the bare boxes joined by ", "."""
    return box_formats.get(fmt).write_boxes([_norm(b["xyxy"], size) for b in boxes], size, label)


# ---------------------------------------------------------------- one turn of one task


@dataclass
class Turn:
    """One question and answer, with the ground truth a GRPO reward checks the answer against."""

    task: str
    user: str
    assistant: str
    synthetic: bool
    answer: str
    labels: list[str] | None = None  # reference CheXpert label set (reason, classify list)
    boxes: list[dict] | None = None  # reference boxes (ground)
    report: str | None = None  # reference report text (report)


@dataclass
class Context:
    record: ManifestRecord
    rng: random.Random
    templates: dict[str, Any]
    config: InstructionConfig

    def pick(self, options: list[str], **values) -> str:
        return self.rng.choice(options).format(**values)

    def prompt(self, name: str, **values) -> str:
        return self.pick(self.templates["prompts"][name], **values)

    def answer(self, name: str, **values) -> str:
        return self.pick(self.templates["answers"][name], **values)

    def state(self, name: str) -> int | None:
        """A label's value; a "No Finding" image implies every pathology is absent (devices excepted)."""
        value = self.record.labels.get(name)
        if value is None and name not in ("No Finding", "Support Devices") and self.record.labels["No Finding"] == 1:
            return 0
        return value

    def answer_labels(self) -> list[str] | None:
        """The reference label list: positives, or ["No Finding"]; None when the labels cannot tell."""
        positives = [n for n in self.record.positives(self.config.uncertain == "positive") if n != "No Finding"]
        if positives:
            return positives
        return ["No Finding"] if self.record.labels["No Finding"] == 1 else None

    def known(self) -> list[str]:
        """Pathology and device labels with a known value."""
        return [name for name in CHEXPERT14[1:] if self.state(name) is not None]


def phrase_list(names: list[str]) -> str:
    """["Edema", "Pleural Effusion"] -> "edema and pleural effusion"."""
    words = [name.lower() for name in names]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def label_sentences(ctx: Context, names: list[str]) -> list[str]:
    polarity = {1: "positive", -1: "uncertain", 0: "negative"}
    return [ctx.pick(ctx.templates["sentences"][n][polarity[ctx.state(n)]]) for n in names if ctx.state(n) is not None]


def review(ctx: Context) -> str:
    """A templated systematic review (airway to devices) that states only what the labels say."""
    spec = ctx.templates["review"]
    lines = [spec["heading"]]
    for region in spec["regions"]:
        if not region["labels"]:
            lines.append(f"{region['title']}: {ctx.pick(region['procedure'])}")
            continue
        states = [ctx.state(n) for n in region["labels"]]
        if all(s is None for s in states):
            continue  # nothing known about this region: say nothing rather than invent
        if region.get("clear") and all(s == 0 for s in states):
            lines.append(f"{region['title']}: {ctx.pick(region['clear'])}")
        else:
            lines.append(f"{region['title']}: {' '.join(label_sentences(ctx, region['labels']))}")
    labels = ctx.answer_labels()
    if labels == ["No Finding"]:
        lines.append(ctx.pick(spec["summary_normal"]))
    else:
        lines.append(ctx.pick(spec["summary_abnormal"], findings=phrase_list(labels)))
    return "\n".join(lines)


def reason_turn(ctx: Context) -> Turn | None:
    labels = ctx.answer_labels()
    if labels is None:
        return None
    answer = ", ".join(labels)
    text = f"<think>\n{review(ctx)}\n</think>\n<answer>{answer}</answer>"
    return Turn(Task.REASON, ctx.prompt("reason"), text, True, answer, labels=labels)


def report_text(findings: str | None, impression: str | None) -> str:
    parts = [f"Findings: {findings}" if findings else None, f"Impression: {impression}" if impression else None]
    return "\n".join(p for p in parts if p)


def templated_report(ctx: Context) -> str | None:
    labels = ctx.answer_labels()
    if labels is None:
        return None
    ordered = [n for region in ctx.templates["review"]["regions"] for n in region["labels"]]
    findings = " ".join(label_sentences(ctx, ordered))
    if labels == ["No Finding"]:
        impression = ctx.answer("no_finding_impression")
    else:
        impression = ctx.answer("impression", findings=phrase_list(labels))
        impression = impression[0].upper() + impression[1:]
    return report_text(findings or None, impression)


def report_turn(ctx: Context) -> Turn | None:
    real = ctx.record.report and not ctx.record.report_is_synthetic
    if real and (ctx.record.report.get("findings") or ctx.record.report.get("impression")):
        text, synthetic = report_text(ctx.record.report.get("findings"), ctx.record.report.get("impression")), False
    else:
        text, synthetic = templated_report(ctx), True
        if text is None:
            return None
    return Turn(Task.REPORT, ctx.prompt("report"), text, synthetic, text, report=text)


def yes_no(ctx: Context, name: str) -> bool:
    value = ctx.state(name)
    return value == 1 or (value == -1 and ctx.config.uncertain == "positive")


def classify_turn(ctx: Context) -> Turn | None:
    options = []
    labels = ctx.answer_labels()
    if labels is not None:
        options.append("list")
    if ctx.known():
        options.append("yes_no")
    if not options:
        return None
    if ctx.rng.choice(options) == "list":
        answer = ", ".join(labels)
        return Turn(Task.CLASSIFY, ctx.prompt("classify_list", choices=", ".join(CHEXPERT14)), answer, False, answer,
                    labels=labels)
    name = ctx.rng.choice(ctx.known())
    answer = ctx.answer("yes" if yes_no(ctx, name) else "no")
    question = ctx.prompt("classify_yes_no", finding=ctx.templates["finding_phrases"][name])
    return Turn(Task.CLASSIFY, question, answer, False, answer)


def truth_box(box: dict, size: tuple[int, int]) -> dict:
    """A reference box for GRPO columns: pixels and 0-1 fractions, one fixed set of keys."""
    width, height = size
    x1, y1, x2, y2 = box["xyxy"]
    norm = [round(x1 / width, 4), round(y1 / height, 4), round(x2 / width, 4), round(y2 / height, 4)]
    return {"label": box["label"], "kind": box["kind"], "phrase": box.get("phrase"), "xyxy": [float(v) for v in box["xyxy"]],
            "xyxy_norm": norm}


def box_groups(record: ManifestRecord) -> list[tuple[str, str, list[dict]]]:
    """(subtask, target text, boxes): one group per anatomy name, per finding label and per phrase."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for box in record.boxes:
        if box.get("phrase"):
            groups[("phrase", box["phrase"])].append(box)
        elif box["kind"] == "anatomy":
            groups[("anatomy", box["label"].lower())].append(box)
        else:
            groups[("finding", box["label"].lower().replace("_", " "))].append(box)
    return [(kind, target, boxes) for (kind, target), boxes in groups.items()]


def ground_turn(ctx: Context) -> Turn | None:
    size, groups = ctx.record.size, box_groups(ctx.record)
    if size is None or not groups:
        return None
    kind, target, boxes = ctx.rng.choice(groups)
    slot = {"anatomy": "region", "finding": "finding", "phrase": "phrase"}[kind]
    question = ctx.prompt(f"ground_{kind}", **{slot: target})
    answer = format_boxes(boxes, size, ctx.config.box_format, boxes[0]["label"] if kind == "phrase" else target)
    return Turn(Task.GROUND, question, answer, False, answer, boxes=[truth_box(b, size) for b in boxes])


def side(box: dict, width: int) -> str | None:
    """The patient's side of a frontal image: image left is the patient's right. Midline boxes -> None."""
    x1, _, x2, _ = box["xyxy"]
    center = (x1 + x2) / 2
    if x2 <= 0.55 * width and center < 0.5 * width:
        return "right"
    if x1 >= 0.45 * width and center > 0.5 * width:
        return "left"
    return None


def side_questions(ctx: Context) -> list[tuple[str, str]]:
    """(finding, "right"|"left"|"both") for finding labels whose every box lies on one side of the midline."""
    record = ctx.record
    frontal = record.view_position in FRONTAL_VIEWS or record.extra.get("frontal") is True
    if not frontal or record.size is None:
        return []
    out = []
    for kind, target, boxes in box_groups(record):
        sides = {side(b, record.width) for b in boxes}
        if kind == "finding" and None not in sides:
            out.append((target, "both" if len(sides) == 2 else sides.pop()))
    return out


def vqa_options(ctx: Context) -> dict[str, Callable[[], tuple[str, str]]]:
    """Question kinds this image supports -> a function drawing (question, answer)."""
    extra, phrases, options = ctx.record.extra, ctx.templates["finding_phrases"], {}
    if ctx.known():
        def presence():
            name = ctx.rng.choice(ctx.known())
            kind = "presence_yes" if yes_no(ctx, name) else "presence_no"
            return ctx.prompt("vqa_presence", finding=phrases[name]), ctx.answer(kind, finding=phrases[name])
        options["presence"] = presence
    if ctx.record.labels["No Finding"] in (0, 1):
        def normal():
            labels = ctx.answer_labels()
            if ctx.record.labels["No Finding"] == 1:
                return ctx.prompt("vqa_normal"), ctx.answer("normal_yes")
            if labels:
                return ctx.prompt("vqa_normal"), ctx.answer("normal_no", findings=phrase_list(labels))
            return ctx.prompt("vqa_normal"), ctx.answer("no")
        options["normal"] = normal
    if side_questions(ctx):
        def which_side():
            finding, where = ctx.rng.choice(side_questions(ctx))
            return ctx.prompt("vqa_side", finding=finding), ctx.templates["answers"]["side"][where]
        options["side"] = which_side
    if "brixia_global" in extra:
        options["brixia_global"] = lambda: (ctx.prompt("vqa_brixia_global"), str(extra["brixia_global"]))
    if "brixia" in extra:
        zones = ", ".join(f"{zone}: {score}" for zone, score in extra["brixia"].items())
        options["brixia_zones"] = lambda: (ctx.prompt("vqa_brixia_zones"), zones)
    for name in ("extent", "opacity"):
        key = "geographic_extent_mean" if name == "extent" else "opacity_mean"
        if key in extra:
            options[name] = lambda name=name, key=key: (ctx.prompt(f"vqa_{name}"), f"{extra[key]:.1f}")
    return options


def vqa_turn(ctx: Context) -> Turn | None:
    options = vqa_options(ctx)
    if not options:
        return None
    question, answer = options[ctx.rng.choice(sorted(options))]()
    return Turn(Task.VQA, question, answer, False, answer)


TURN_BUILDERS: dict[str, Callable[[Context], Turn | None]] = {
    Task.REASON: reason_turn,
    Task.REPORT: report_turn,
    Task.CLASSIFY: classify_turn,
    Task.GROUND: ground_turn,
    Task.VQA: vqa_turn,
}


def conversation_turns(ctx: Context) -> list[Turn] | None:
    """Two or three different single-turn tasks about the same image, in a random order."""
    pool = [t for t in ctx.config.tasks if t in TURN_BUILDERS]
    ctx.rng.shuffle(pool)
    wanted, turns = ctx.rng.choice((2, 3)), []
    for task in pool:
        turn = TURN_BUILDERS[task](ctx)
        if turn is not None:
            turns.append(turn)
        if len(turns) == wanted:
            break
    return turns if len(turns) >= 2 else None


def draw_turns(ctx: Context) -> tuple[str, list[Turn]] | None:
    """Draw a task by weight; if the image cannot support it, draw again among the rest."""
    remaining = [t for t in ctx.config.tasks if ctx.config.mix.get(t, 0) > 0]
    while remaining:
        task = ctx.rng.choices(remaining, weights=[ctx.config.mix[t] for t in remaining])[0]
        if task == Task.CONVERSATION:
            turns = conversation_turns(ctx)
        else:
            turn = TURN_BUILDERS[task](ctx)
            turns = [turn] if turn else None
        if turns:
            return task, turns
        remaining.remove(task)
    return None


# ---------------------------------------------------------------- examples and files


def messages(turns: list[Turn], with_last_answer: bool = True) -> list[dict]:
    """Hugging Face chat messages; the image goes at the start of the first user turn.

    Every content part has both keys (`text` is None for the image), so `datasets` reads `content` as one
    struct type, as in Hugging Face's own vision chat datasets.
    """
    out = []
    for k, turn in enumerate(turns):
        content = ([{"type": "image", "text": None}] if k == 0 else []) + [{"type": "text", "text": turn.user}]
        out.append({"role": "user", "content": content})
        if with_last_answer or k < len(turns) - 1:
            out.append({"role": "assistant", "content": [{"type": "text", "text": turn.assistant}]})
    return out


def example(record: ManifestRecord, task: str, turns: list[Turn], index: int, config: InstructionConfig,
            version: str) -> dict[str, Any]:
    last = turns[-1]
    row = {
        "id": f"{record.dataset}:{record.image}:{index}",
        # GRPO scores the last turn, so a conversation is filed under that turn's task there.
        "task": task if config.format == "sft" else last.task,
        "turns": len(turns),
        "template_version": version,
        "synthetic": any(t.synthetic for t in turns),
        "dataset": record.dataset,
        "study_id": record.study_id,
        "split": record.split,
        "images": [str(record.image_path)],
    }
    if config.format == "sft":
        row["messages"] = messages(turns)
        return row
    row.update(
        prompt=messages(turns, with_last_answer=False),
        answer=last.answer,
        labels=last.labels,
        boxes=last.boxes,
        report=last.report,
        image_size=list(record.size) if record.size else None,
        box_format=box_formats.get(config.box_format).name,  # how `answer` writes boxes; the box rewards read it
    )
    return row


def record_examples(record: ManifestRecord, config: InstructionConfig, templates: dict) -> list[dict]:
    """The examples of one image; the RNG is seeded by (seed, dataset, image, k), not by position."""
    out = []
    for k in range(config.per_image):
        rng = random.Random(f"{config.seed}:{record.dataset}:{record.image}:{k}")
        drawn = draw_turns(Context(record, rng, templates, config))
        if drawn is not None:
            out.append(example(record, drawn[0], drawn[1], k, config, templates["version"]))
    return out


@dataclass
class BuildStats:
    examples: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # split -> task -> n
    synthetic: Counter = field(default_factory=Counter)  # split -> n synthetic
    skipped: Counter = field(default_factory=Counter)  # reason -> n images

    def to_dict(self) -> dict:
        return {"examples": {s: dict(c) for s, c in self.examples.items()}, "synthetic": dict(self.synthetic),
                "skipped_images": dict(self.skipped)}


def build_instructions(records: Iterable[ManifestRecord], config: InstructionConfig,
                       templates: dict | None = None) -> tuple[dict[str, list[dict]], BuildStats]:
    """Examples per split (only `config.splits`), and what was built and skipped."""
    templates = templates or load_templates()
    rows: dict[str, list[dict]] = {split: [] for split in config.splits}
    stats = BuildStats()
    for record in records:
        if record.split not in rows:
            continue
        if record.image is None:
            stats.skipped["no image (text-only record)"] += 1
            continue
        built = record_examples(record, config, templates)
        if not built:
            stats.skipped["no task fits its labels/boxes"] += 1
        for row in built:
            rows[record.split].append(row)
            stats.examples[record.split][row["task"]] += 1
            stats.synthetic[record.split] += row["synthetic"]
    return rows, stats


def write_instructions(records: Iterable[ManifestRecord], out_dir: str | Path, config: InstructionConfig,
                       templates: dict | None = None) -> BuildStats:
    """Write <out_dir>/<split>.jsonl per split and info.json (config, template version, counts)."""
    templates = templates or load_templates()
    rows, stats = build_instructions(records, config, templates)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, examples in rows.items():
        with (out_dir / f"{split}.jsonl").open("w", encoding="utf-8") as out:
            for row in examples:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    info = {"config": asdict(config), "template_version": templates["version"],
            "parser_box_format": box_formats.get(config.box_format).name, **stats.to_dict()}
    (out_dir / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return stats
