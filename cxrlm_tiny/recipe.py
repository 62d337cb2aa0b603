"""The cxrlm-tiny recipe, end to end: data, tokenizer, encoder pretraining, SFT, GRPO, single-turn SFT.

    cxrlm train tiny --data ../shared/data --work runs/tiny-train --out weights/cxrlm-tiny

Every stage is the project's own code: manifests from `cxrlm.data.sources` (patient-level split, 20% validation
kept out of every stage), the instruction builder's synthetic `<think>` reviews and reports, `cxrlm.models.tiny`
for the Qwen2.5-VL folder, `cxrlm_tiny.encoder` for the vision tower, then `cxrlm.train.sft` and
`cxrlm.train.grpo` (TRL), and optionally soft yes/no answers from `cxrlm_tiny.probes`. The prompts are the
nv-reason dialect's exact words, the ones `cxrlm` asks at inference.
Lung boxes for the training images that readers did not box come from the model-predicted `lung_masks/` and from
an ensemble of ResNet-18 teachers; augmented copies of the training images (random resized crop, brightness/contrast,
mirror) are written under --work, so the text stages see more than the 75 reader-boxed lungs. The same command runs
on a CPU or, when one is visible, a GPU; run again after a stop, it goes on from encoder pretraining's last check,
or takes the tower of a finished pretraining and starts at SFT. Nothing from ../shared/data is copied into the
repository. The options and their defaults (the recipe is its defaults) are the command's: cxrlm/cli/tiny.py.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from cxrlm.data.instructions import (
    Context,
    InstructionConfig,
    Turn,
    format_box,
    load_templates,
    messages,
    reason_turn,
    report_turn,
)
from cxrlm.data.manifest import ManifestRecord
from cxrlm.errors import InputError
from cxrlm.pathologies import CHEXPERT14, CLASSIFY_LABELS, NIH14, label_phrase
from cxrlm.prompts.templates import NV_REASON
from cxrlm.train.soft_answers import COLUMN as SOFT  # a row's P(yes); under a record's `extra`, label -> P(yes)
from cxrlm_tiny.cnn import nih_targets, norm_boxes
from cxrlm_tiny.encoder import BOX_LABELS, STATE_FILE, EncoderConfig, Item, augment, loader_workers, pretrain

VAL_FRACTION = 0.2
IMAGE_SIDE = 448  # the pixel budget: a 512 px radiograph becomes a 16 x 16 grid of 28 px patches, 64 tokens
TEXT = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
VISION = dict(depth=4, hidden_size=192, intermediate_size=512, num_heads=3, patch_size=28,
              window_size=IMAGE_SIDE, fullatt_block_indexes=[0, 1, 2, 3])
VOCAB_SIZE = 4096
QUESTION_LABEL = {NV_REASON.classify_question.format(label=label_phrase(name)): name for name in CLASSIFY_LABELS}
PREDICTED = "model-predicted"  # in a box's source: from the masks or the teachers, not drawn by a reader
# The notice travels with every output of the model this recipe makes (ModelProfile.notice): it is a demonstration.
NOTICE = ("demonstration model: near-chance accuracy for most findings, calls pneumonia on most images; "
          "see its MODEL_CARD.md")
PROFILE = {"profile": "nv-reason-cxr", "box_format": "int100", "min_pixels": 56 * 56,
           "max_pixels": IMAGE_SIDE * IMAGE_SIDE, "max_new_tokens": 320, "notice": NOTICE}

# ---------------------------------------------------------------- data


def manifests(data: Path) -> list[ManifestRecord]:
    from cxrlm.data.sources import build_records

    records = []
    for name in ("nih14", "covid-chestxray"):
        if not (data / name).is_dir():
            raise InputError(f"--data {data} has no {name}/ folder: pass the folder that holds the shared datasets")
        records += build_records(name, data / name, val_fraction=VAL_FRACTION, test_fraction=0.0)
    return [add_mask_boxes(r, data / "covid-chestxray") for r in records]


def add_mask_boxes(record: ManifestRecord, root: Path) -> ManifestRecord:
    """Lung boxes from `lung_masks/` (model-predicted masks) for covid images that have none: the two largest
    blobs, the one on the image's left being the patient's right lung."""
    from PIL import Image
    from scipy import ndimage

    mask_path = root / "lung_masks" / (Path(record.image or "").stem + ".png")
    if record.dataset != "covid-chestxray" or record.boxes or not mask_path.is_file():
        return record
    mask = np.asarray(Image.open(mask_path).convert("L")) > 127
    blobs, count = ndimage.label(mask)
    if count < 2 or mask.shape != (record.height, record.width):
        return record
    sizes = ndimage.sum(mask, blobs, range(1, count + 1))
    found = ndimage.find_objects(blobs)
    two = sorted((found[i] for i in np.argsort(sizes)[-2:]), key=lambda s: s[1].start)
    boxes = [{"label": label, "xyxy": [float(s[1].start), float(s[0].start), float(s[1].stop), float(s[0].stop)],
              "kind": "anatomy", "source": f"lung_masks ({PREDICTED})"} for label, s in zip(BOX_LABELS, two)]
    return replace(record, boxes=boxes)


def lung_boxes(record: ManifestRecord) -> np.ndarray:
    """(2, 4) right/left lung boxes in 0-1, NaN unless the record has exactly one of each."""
    boxes = norm_boxes(record, BOX_LABELS)
    return np.full((2, 4), np.nan, dtype=np.float32) if boxes is None else boxes


def teacher_boxes(train: list[ManifestRecord], val: list[ManifestRecord], seeds: int,
                  epochs: int = 30, size: int = 128) -> tuple[dict[str, np.ndarray], float]:
    """Lung boxes for the training images that have none, predicted by an ensemble of ResNet-18 regressors trained
    from scratch on those that have both (cxrlm_tiny.cnn's regressor): the tower and the language model
    then learn where the lungs are from every training image, not only the boxed ones. Images on which it disagrees
    (a member's box under IoU 0.8 with the ensemble's mean box) get none. Returns {image: (2, 4) boxes in 0-1}
    and the ensemble's mean IoU on the validation images with reader lung boxes, the boxes `cxrlm eval` scores
    (reported, never used to choose anything)."""
    from cxrlm_tiny.cnn import box_loss, load_pixels, predict, train_net
    from cxrlm.metrics.boxes import iou

    boxed = [r for r in train if not np.isnan(lung_boxes(r)).any()]
    rest = [r for r in train if np.isnan(lung_boxes(r)).any()]
    checked = [r for r in val if not np.isnan(lung_boxes(r)).any()
               and not any(PREDICTED in b.get("source", "") for b in r.boxes)]
    pixels, targets = load_pixels(boxed, size), np.stack([lung_boxes(r) for r in boxed])
    inputs = load_pixels(rest + checked, size)
    members = []
    for seed in range(seeds):
        net, norm = train_net(pixels, targets, box_loss, outputs=8, epochs=epochs, size=size, seed=seed, boxes=True)
        members.append(1 / (1 + np.exp(-predict(net, inputs, norm).reshape(-1, 2, 4))))
    members = np.stack(members)  # (seeds, images, 2, 4)
    mean = members.mean(0)
    agreement = [min(iou(list(m[i, k]), list(mean[i, k])) for m in members for k in range(2))
                 for i in range(len(rest))]
    boxes = {r.image: mean[i] for i, r in enumerate(rest) if agreement[i] >= 0.8}
    val_iou = [iou(list(lung_boxes(r)[k]), list(mean[len(rest) + i][k]))
               for i, r in enumerate(checked) for k in range(2)]
    return boxes, float(np.mean(val_iou)) if val_iou else float("nan")


def with_teacher_boxes(records: list[ManifestRecord], boxes: dict[str, np.ndarray]) -> list[ManifestRecord]:
    """Records with the teachers' lung boxes (0-1) added where `teacher_boxes` gave some; named as model-predicted."""
    out = []
    for r in records:
        if r.image not in boxes:
            out.append(r)
            continue
        kept = [b for b in r.boxes if b["label"].lower() not in BOX_LABELS]
        scale = np.array([r.width, r.height, r.width, r.height])
        added = [{"label": label, "xyxy": [float(v) for v in box * scale], "kind": "anatomy",
                  "source": f"ResNet-18 teachers ({PREDICTED})"} for label, box in zip(BOX_LABELS, boxes[r.image])]
        out.append(replace(r, boxes=kept + added))
    return out


def encoder_items(records: list[ManifestRecord]) -> list[Item]:
    """NIH images (labels) and images with both lungs boxed (by readers, masks or teachers); other images teach
    nothing here."""
    items = []
    for r in records:
        labels, boxes = nih_targets([r])[0], lung_boxes(r)
        if np.isnan(labels).all() and np.isnan(boxes).any():
            continue
        items.append(Item(np.asarray(_open_gray(r.image_path)), labels, boxes))
    return items


def augmented_records(records: list[ManifestRecord], folder: Path, copies: int, box_copies: int,
                      seed: int) -> list[ManifestRecord]:
    """Augmented JPEGs of the records, written under `folder`: `copies` per image, `box_copies` per image with
    lung boxes (the boxes moved with the crop and mirror), since boxes are few and localisation needs variety."""
    import torch

    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for r in records:
        item = Item(np.asarray(_open_gray(r.image_path)), nih_targets([r])[0], lung_boxes(r))
        for k in range(copies if np.isnan(item.boxes).any() else box_copies):
            image, boxes = augment(item, rng, generator, jitter=0.15, flip=0.5)
            path = folder / f"{r.dataset}-{Path(r.image).stem}-{k}.jpg"
            image.convert("L").save(path, quality=92)
            width, height = image.size
            moved = [] if np.isnan(boxes).any() else [
                {"label": name, "xyxy": [float(v) for v in box * [width, height, width, height]], "kind": "anatomy"}
                for name, box in zip(BOX_LABELS, boxes)]
            # the name, not the whole path, is the copy's `image`: rows are seeded by it (write_sft), so they do not
            # change with where --work is
            out.append(replace(r, image=path.name, root=str(folder.resolve()), width=width, height=height,
                               boxes=moved))
    return out


def _open_gray(path):
    from PIL import Image

    return Image.open(path).convert("L")


# ---------------------------------------------------------------- instruction rows


def label_value(record: ManifestRecord, name: str) -> int | None:
    """1/0 for a CheXpert or NIH label name, None when unknown (NIH names from `source_labels`)."""
    if name in NIH14 and record.source_labels.get(name) in (0, 1):
        return int(record.source_labels[name])
    if name in CHEXPERT14 and record.labels.get(name) in (0, 1, -1):
        return int(record.labels[name] != 0)
    return None


def sft_turns(record: ManifestRecord, rng: random.Random, templates: dict, questions: int,
              texts: bool = True) -> list[Turn]:
    """Single-turn examples of one image, each asked exactly as `cxrlm` asks at inference. Without `texts`, only
    the short answers (labels, boxes): augmented copies teach reading the image, not the review's wording."""
    ctx = Context(record, rng, templates, InstructionConfig(box_format="int100"))
    turns = []
    reason = reason_turn(ctx) if texts else None
    if reason is not None:
        turns.append(replace(reason, user=NV_REASON.reason))
    report = report_turn(ctx) if texts else None
    if report is not None and rng.random() < 0.3:
        turns.append(replace(report, user=NV_REASON.report))
    known = [n for n in CLASSIFY_LABELS if label_value(record, n) is not None]
    positives = [n for n in known if label_value(record, n) == 1]
    asked = rng.sample(positives, min(len(positives), questions // 2))
    asked += rng.sample([n for n in known if n not in asked], min(len(known) - len(asked), questions - len(asked)))
    for name in asked:
        answer = "Yes." if label_value(record, name) == 1 else "No."
        turns.append(Turn("classify", NV_REASON.classify_question.format(label=label_phrase(name)), answer, False,
                          answer))
    for box in record.boxes:
        if box["label"].lower() in BOX_LABELS:
            answer = format_box(box["xyxy"], record.size, "int100")
            turns.append(Turn("ground", NV_REASON.ground.format(phrase=box["label"].lower()), answer, False, answer))
    return turns


def write_sft(records: list[ManifestRecord], path: Path, questions: int, seed: int,
              copies: list[ManifestRecord] = (), single_turn: bool = False) -> int:
    """One conversation per image: its examples as turns in a random order, so the image is encoded once and
    every task is also seen as the first turn (which is how `cxrlm` asks at inference). Augmented `copies` get
    the short answers only. With `single_turn`, one row per example instead: in a conversation most answers can
    be read off earlier turns (the review's `<answer>` lists the labels), so only a first turn must be read from
    the image, and the language model learned to read it poorly. Records with soft answers (`with_soft_answers`)
    give their yes/no rows a `yes_prob` column (cxrlm.train.soft_answers)."""
    templates, rows = load_templates(), []
    soft = any(SOFT in r.extra for r in (*records, *copies))
    for r, texts in [*((r, True) for r in records), *((r, False) for r in copies)]:
        rng = random.Random(f"{seed}:{r.image}")
        turns = sft_turns(r, rng, templates, questions, texts)
        rng.shuffle(turns)
        groups = [[t] for t in turns] if single_turn else [turns]
        for group in filter(None, groups):
            rows.append({"synthetic": any(t.synthetic for t in group), "messages": messages(group),
                         "images": [str(r.image_path)]})
            if soft:  # every row has the column (null when hard): a dataset's columns are its first row's
                asked = QUESTION_LABEL.get(group[0].user) if len(group) == 1 else None
                rows[-1][SOFT] = r.extra.get(SOFT, {}).get(asked)
    random.Random(seed).shuffle(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


def with_soft_answers(model: Path, records: list[ManifestRecord], seed: int) -> list[ManifestRecord]:
    """The records with cross-fitted probe probabilities for their label questions under `extra`, from the vision
    tower of `model` (cxrlm_tiny.probes); augmented copies made from them inherit their image's answers."""
    from cxrlm_tiny import probes

    targets = {name: np.array([np.nan if (v := label_value(r, name)) is None else v for r in records], float)
               for name in CLASSIFY_LABELS}
    answers = probes.soft_answers(model, [str(r.image_path) for r in records], targets, seed)
    return [replace(r, extra={**r.extra, SOFT: answers[str(r.image_path)]}) for r in records]


def write_grpo(records: list[ManifestRecord], path: Path, seed: int) -> int:
    """Reasoning prompts with their reference labels, for the format and label-F1 rewards."""
    templates, rows = load_templates(), []
    for r in records:
        turn = reason_turn(Context(r, random.Random(f"{seed}:{r.image}"), templates, InstructionConfig()))
        if turn is not None:
            rows.append({"task": "reason", "prompt": messages([replace(turn, user=NV_REASON.reason)], False),
                         "images": [str(r.image_path)], "answer": turn.answer, "labels": turn.labels})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


def corpus(data: Path, sft_file: Path) -> list[str]:
    """Radiology text for the tokenizer: IU reports, covid case notes, and every prompt and answer of SFT."""
    import csv

    texts = []
    with (data / "iu-xray-reports" / "reports_with_gold_labels.csv").open(newline="") as handle:
        texts += [f"{row.get('findings') or ''}\n{row.get('impression') or ''}" for row in csv.DictReader(handle)]
    with (data / "covid-chestxray" / "metadata.csv").open(newline="") as handle:
        texts += [row.get("clinical_notes") or "" for row in csv.DictReader(handle)]
    for line in sft_file.read_text().splitlines():
        row = json.loads(line)
        texts += [part["text"] for m in row["messages"] for part in m["content"] if part.get("text")]
    return texts


# ---------------------------------------------------------------- the stages


def text_stage_settings(seed: int) -> dict:
    """What SFT, GRPO and single-turn SFT share: the tower frozen, float32 weights (TF32 on a GPU: bf16 weights would
    round away GRPO's 1e-5 updates), the recipe's pixel budget, no intermediate checkpoints."""
    return dict(freeze_vision=True, dtype="float32", dataloader_num_workers=loader_workers(), save_steps=10**9,
                seed=seed, min_pixels=PROFILE["min_pixels"], max_pixels=PROFILE["max_pixels"])


def single_turn_sft(model: Path, records: list[ManifestRecord], work: Path, args) -> Path:
    """Single-turn SFT (`write_sft(single_turn=True)`) over the training images and 2 augmented
    copies of each, tower frozen. `records` carry the readers' and masks' boxes only, so this stage does not depend
    on the teacher ensemble (which no two devices reproduce bit for bit)."""
    return one_turn_sft(model, records, work, "single_turn", args.questions, args.single_turn_steps, args)


def label_distillation(model: Path, records: list[ManifestRecord], work: Path, args) -> Path:
    """The last stage: the single-turn rows, but every image is asked about every label it has, and the
    yes/no answers are soft: the cross-fitted probabilities of linear probes on the model's own frozen tower
    (`with_soft_answers`, cxrlm_tiny.probes). In `single_turn_sft` each label's rows pass less than once and the
    language model learns little beyond each label's base rate; here every label is seen often enough (about 11
    times per image in the recipe's 5,000 steps) for it to follow the probes. Box, review and report rows stay in,
    so the other tasks are not forgotten."""
    records = with_soft_answers(model, records, args.seed)
    return one_turn_sft(model, records, work, "distil", len(CLASSIFY_LABELS), args.distil_steps, args)


def one_turn_sft(model: Path, records: list[ManifestRecord], work: Path, name: str, questions: int, steps: int,
                 args) -> Path:
    """SFT on one-turn rows of `records` and 2 augmented copies of each (the same copies for a given seed)."""
    from cxrlm.train import sft
    from cxrlm.train.config import SFTRecipe

    copies = augmented_records(records, work / "single-turn-images", 2, 2, args.seed)
    write_sft(records, work / f"{name}.jsonl", questions, args.seed, copies, single_turn=True)
    return sft.main(SFTRecipe(
        model=str(model), train_file=str(work / f"{name}.jsonl"), output_dir=str(work / name),
        cache_vision=True, learning_rate=args.single_turn_lr, max_steps=steps,
        per_device_train_batch_size=16, warmup_steps=0.03, weight_decay=0.01, logging_steps=50,
        **text_stage_settings(args.seed)))


def run(data: Path, work: Path, out: Path, args) -> dict:
    import torch

    from cxrlm.models.tiny import build_tiny_checkpoint
    from cxrlm.train import grpo, sft
    from cxrlm.train.config import GRPORecipe, SFTRecipe

    start, stages = time.perf_counter(), {}
    torch.backends.cuda.matmul.allow_tf32 = True  # float32 weights, TF32 matrix units: fast and precise enough
    work.mkdir(parents=True, exist_ok=True)
    records = manifests(data)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]

    def stage(name):
        stages[name] = round(time.perf_counter() - start)
        print(f"[tiny] {name} done at {stages[name]} s", flush=True)

    extra, teacher_iou = teacher_boxes(train, val, args.teachers) if args.teachers else ({}, None)
    without_teachers, train = train, with_teacher_boxes(train, extra)
    stage(f"teacher boxes ({len(extra)} images; the ensemble's IoU on the validation reader boxes {teacher_iou})")

    copies = augmented_records(train, work / "images", args.copies, args.box_copies, args.seed)
    n_sft = write_sft(train, work / "sft.jsonl", args.questions, args.seed, copies)
    n_grpo = write_grpo(train, work / "grpo.jsonl", args.seed)
    stage(f"data ({len(train)} train images, {len(train) + len(copies)} with copies, {n_sft} SFT conversations, {n_grpo} GRPO prompts)")

    init = work / "init"
    shutil.rmtree(init, ignore_errors=True)
    build_tiny_checkpoint(init, corpus(data, work / "sft.jsonl"), VOCAB_SIZE, TEXT, VISION,
                          max_pixels=IMAGE_SIDE * IMAGE_SIDE, patch_size=VISION["patch_size"], seed=args.seed)
    (init / "cxrlm.json").write_text(json.dumps(PROFILE, indent=2) + "\n")
    stage("architecture and tokenizer")

    # kept in the work folder, which a rerun keeps: the same command goes on from a stopped pretraining's last check
    # or, after a stop in a later stage, takes the finished tower from it
    encoder_config = EncoderConfig(epochs=args.encoder_epochs, label_anchor=args.label_anchor or None, seed=args.seed)
    encoder_log = pretrain(init, encoder_items(train), encoder_items(val), encoder_config, work / STATE_FILE)
    encoder_log["teacher"] = {"images": len(extra), "val_lung_iou": teacher_iou}
    stage("encoder pretraining")

    shared = text_stage_settings(args.seed)
    sft_dir = sft.main(SFTRecipe(
        model=str(init), train_file=str(work / "sft.jsonl"), output_dir=str(work / "sft"), cache_vision=True,
        learning_rate=args.sft_lr, num_train_epochs=args.sft_epochs, per_device_train_batch_size=8,
        warmup_steps=0.03, weight_decay=0.01, logging_steps=25, **shared))
    stage("SFT")

    final = sft_dir
    if args.grpo_steps > 0:
        final = grpo.main(GRPORecipe(
            model=str(sft_dir), train_file=str(work / "grpo.jsonl"), output_dir=str(work / "grpo"),
            learning_rate=args.grpo_lr, max_steps=args.grpo_steps, per_device_train_batch_size=8,
            num_generations=4, max_completion_length=PROFILE["max_new_tokens"], rewards=["format", "label_f1"],
            temperature=1.0, logging_steps=5, **shared))
        stage("GRPO")

    if args.single_turn_steps > 0:
        final = single_turn_sft(Path(final), without_teachers, work, args)
        stage("single-turn SFT")

    if args.distil_steps > 0:
        final = label_distillation(Path(final), without_teachers, work, args)
        stage("label distillation")

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "processor_config.json", "chat_template.jinja", "cxrlm.json"):
        if (Path(final) / name).is_file():
            shutil.copy(Path(final) / name, out / name)
    log = {"stages_s": stages, "encoder": encoder_log, "train_images": len(train), "val_images": len(val),
           "sft_rows": n_sft, "grpo_prompts": n_grpo, "args": vars(args)}
    (work / "training_log.json").write_text(json.dumps(log, indent=2, default=str) + "\n")
    return log

