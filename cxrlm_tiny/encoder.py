"""Encoder pretraining: train the vision tower of a Qwen2.5-VL checkpoint with direct heads, before SFT.

A vision tower trained from scratch only through the language model's text loss learns slowly from a few hundred
images (a 10M-parameter Qwen2.5-VL taught lung boxes as text that way stayed at mean IoU 0.72, near the mean-box
baseline). Here the tower gets direct supervision first: an NIH-14 multi-label head and a lung-box regressor, both
reading its mean token and each token alone. Reading token values matters: a head that supplied token positions
itself (a soft-argmax over the grid) trained a tower whose tokens did not say where the lungs are, and the language
model, which receives token values and not positions, then read boxes worse than the mean box (IoU 0.645 vs 0.700).
Images get a random resized crop, which moves the boxes with it, a brightness/contrast jitter and a mirror image,
then pass through the checkpoint's own processor, so the tower sees what inference gives it. The label head
overfits a few hundred images long before the box head stops improving; with `label_anchor`, from that epoch on
the label targets are the outputs of a frozen copy of the tower and heads as they were then (learning without
forgetting, Li & Hoiem 2016), so the boxes go on improving while the labels are kept, not overfitted. Each image's
augmentation is seeded by (seed, epoch, index), so a run is the same with or without DataLoader workers (used on a
GPU, where preparing images is the bottleneck). The heads are thrown away; the tower is written back into the
checkpoint for SFT (`freeze_vision`). At every validation check the run's state is saved (by default next to the
checkpoint, `encoder_state.pt`), and a stopped run started again with the same settings and images goes on from
there, to the same weights: longer pretraining takes hours on a CPU. The state of a finished run stays, so a recipe
stopped in a later stage gets its tower back in seconds; a finished state from other settings is trained over.

Not here: which images and boxes (cxrlm_tiny.recipe builds them), the text stages (cxrlm.train.sft, cxrlm.train.grpo).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cxrlm.errors import ConfigError
from cxrlm.eval.scoring import MIN_POSITIVES
from cxrlm.metrics.boxes import iou
from cxrlm.pathologies import NIH14
from cxrlm_tiny.cnn import classification_scores, crop_boxes, random_crops, training_device

BOX_LABELS = ("right lung", "left lung")
STATE_FILE = "encoder_state.pt"  # a pretraining's state at its last check, kept when it ends


@dataclass
class Item:
    """One training or validation image: grayscale pixels, NIH targets (NaN = unknown), lung boxes in 0-1."""

    image: np.ndarray  # (H, W) uint8
    labels: np.ndarray  # (14,) float: 1, 0 or NaN
    boxes: np.ndarray  # (2, 4) float in 0-1, NaN when the image has no lung boxes


@dataclass
class EncoderConfig:
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    box_weight: float = 5.0
    jitter: float = 0.15  # brightness and contrast change, as a fraction
    flip: float = 0.5  # probability of a mirror image (boxes swapped with it)
    token_weight: float = 1.0  # the heads also read each token alone, so every token carries the answer
    min_positives: int = MIN_POSITIVES  # a label enters the validation macro AUROC with this many positives
    eval_every: int = 5  # epochs between validation checks (and the last epoch)
    label_anchor: int | None = None  # from this epoch on, the label targets are the tower's own outputs then
    seed: int = 0


def heads(dim: int):
    import torch

    class Heads(torch.nn.Module):
        """Both heads read the mean token, and every token on its own: the tower must put what the language model
        will need (labels, and where the lungs are) into its tokens' values, since attention passes values on, not
        positions, and into every token, so that whatever a question attends to can answer it."""

        def __init__(self):
            super().__init__()
            self.labels = torch.nn.Linear(dim, len(NIH14))
            self.boxes = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.GELU(),
                                             torch.nn.Linear(dim, 4 * len(BOX_LABELS)))

        def forward(self, tokens):
            """tokens (n, dim) of one image -> (n + 1, 14) logits, (n + 1, boxes, 4) in 0-1: row 0 reads the mean
            token, the others each token alone."""
            rows = torch.cat([tokens.mean(0, keepdim=True), tokens])
            return self.labels(rows), torch.sigmoid(self.boxes(rows)).view(len(rows), len(BOX_LABELS), 4)

    return Heads()


def linear_patch_embed(visual) -> None:
    """Run the tower's Conv3d patch embedding as the matmul it is: the same weights and result, but CPU
    convolution backward is most of a step's time otherwise."""
    import torch.nn.functional as F

    proj = visual.patch_embed.proj
    weight = proj.weight

    def forward(hidden_states):
        flat = weight.view(weight.shape[0], -1)
        return F.linear(hidden_states.view(-1, flat.shape[1]).to(flat.dtype), flat, proj.bias)

    visual.patch_embed.forward = forward


def augment(item: Item, rng: np.random.Generator, generator, jitter: float, flip: float = 0.0):
    """(PIL RGB image, boxes) after a random resized crop (80-100% of each side), brightness/contrast jitter and,
    with probability `flip`, a mirror image. Mirroring swaps the boxes, so the lung on the image's left is still
    the "right lung": the names follow the film's convention, which is what a reader is asked about."""
    from PIL import Image

    window = random_crops(1, generator)[0]
    h, w = item.image.shape
    x0, y0 = int(window[0] * w), int(window[1] * h)
    x1, y1 = max(x0 + 8, int((window[0] + window[2]) * w)), max(y0 + 8, int((window[1] + window[3]) * h))
    crop = item.image[y0:y1, x0:x1].astype(np.float32)
    contrast, brightness = 1 + rng.uniform(-jitter, jitter), 255 * rng.uniform(-jitter, jitter) / 2
    crop = ((crop - crop.mean()) * contrast + crop.mean() + brightness).clip(0, 255).astype(np.uint8)
    actual = np.array([[x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h]], dtype=np.float32)
    boxes = crop_boxes(item.boxes[None], actual)[0] if not np.isnan(item.boxes).any() else item.boxes
    if rng.random() < flip:
        crop = np.ascontiguousarray(crop[:, ::-1])
        boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=1)[::-1].copy()
    return Image.fromarray(crop).convert("RGB"), boxes


def loader_workers() -> int:
    """DataLoader processes: on a GPU the CPU prepares the batches (crops, processor, chat template) and is the
    bottleneck, so spread that over most cores; on a CPU the training itself needs them."""
    import torch

    return max(1, (os.cpu_count() or 2) - 2) if torch.cuda.is_available() else 0


class Augmented:
    """The training items of one epoch, augmented; a map-style dataset for torch's DataLoader."""

    def __init__(self, items: list[Item], config: EncoderConfig, epoch: int):
        self.items, self.config, self.epoch = items, config, epoch

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index: int):
        import torch

        rng = np.random.default_rng((self.config.seed, self.epoch, index))
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        image, boxes = augment(self.items[index], rng, generator, self.config.jitter, self.config.flip)
        return image, self.items[index].labels, boxes


def forward(visual, head, batch):
    """Per image, logits (n + 1, 14) and boxes (n + 1, 2, 4) for a processor batch (row 0: the mean token)."""
    device = next(visual.parameters()).device
    grid = batch["image_grid_thw"].to(device)
    tokens = visual(batch["pixel_values"].to(device), grid_thw=grid).pooler_output
    sizes = (grid.prod(-1) // visual.spatial_merge_size**2).tolist()
    return [head(t) for t in tokens.split(sizes)]


def loss_fn(outputs, items_labels, items_boxes, box_weight: float, token_weight: float, anchor=None):
    """Label BCE (known labels only) plus box smooth-L1 (boxed images only), on the mean token and, weighted by
    `token_weight`, on each token. With `anchor` (a frozen tower's outputs for the same batch), the label targets
    are its probabilities, for every row and label, instead of the labels."""
    import torch
    import torch.nn.functional as F

    def one(logits, boxes, labels, targets):
        known = ~torch.isnan(labels)
        loss = F.binary_cross_entropy_with_logits(logits[known], labels[known]) if known.any() else logits.sum() * 0
        boxed = ~torch.isnan(targets).any(-1).any(-1)
        if boxed.any():
            loss = loss + box_weight * F.smooth_l1_loss(boxes[boxed], targets[boxed], beta=0.05)
        return loss

    counts = torch.tensor([len(o[0]) - 1 for o in outputs], device=items_labels.device)
    pooled_labels, token_labels = items_labels, items_labels.repeat_interleave(counts, 0)
    if anchor is not None:
        pooled_labels = torch.sigmoid(torch.stack([a[0][0] for a in anchor]))
        token_labels = torch.sigmoid(torch.cat([a[0][1:] for a in anchor]))
    pooled = one(torch.stack([o[0][0] for o in outputs]), torch.stack([o[1][0] for o in outputs]),
                 pooled_labels, items_boxes)
    per_token = one(torch.cat([o[0][1:] for o in outputs]), torch.cat([o[1][1:] for o in outputs]),
                    token_labels, items_boxes.repeat_interleave(counts, 0))
    return pooled + token_weight * per_token


def evaluate(visual, head, image_processor, items: list[Item], min_positives: int) -> dict:
    """Validation macro AUROC (labels with >= min_positives positives) and mean lung IoU, no augmentation."""
    import torch
    from PIL import Image

    visual.eval()
    scores, predicted = [], []
    with torch.no_grad():
        for start in range(0, len(items), 32):
            chunk = [Image.fromarray(it.image).convert("RGB") for it in items[start : start + 32]]
            outputs = forward(visual, head, image_processor(images=chunk, return_tensors="pt"))
            scores.append(np.stack([o[0][0].cpu().numpy() for o in outputs]))
            predicted.append(np.stack([o[1][0].cpu().numpy() for o in outputs]))
    visual.train()
    scores, predicted = np.concatenate(scores), np.concatenate(predicted)
    macro = classification_scores(np.stack([it.labels for it in items]), scores, min_positives)["macro_auroc"]
    ious = [iou(list(t), list(p)) for it, ps in zip(items, predicted) if not np.isnan(it.boxes).any()
            for t, p in zip(it.boxes, ps)]
    return {"macro_auroc": macro, "lung_iou": float(np.mean(ious)) if ious else None}


def fingerprint(items: list[Item], config: EncoderConfig) -> dict:
    """What a run's result depends on besides the initial weights: its settings and its images and targets."""
    digest = hashlib.sha256()
    for it in items:
        for array in (it.image, it.labels, it.boxes):
            digest.update(np.ascontiguousarray(array).tobytes())
    return {"config": asdict(config), "images": digest.hexdigest()}


def frozen_copy(visual, head):
    """A frozen copy of the tower and heads: the label anchor. Its patch embedding must read its own weights."""
    import copy

    visual, head = copy.deepcopy(visual), copy.deepcopy(head)
    linear_patch_embed(visual)
    for param in [*visual.parameters(), *head.parameters()]:
        param.requires_grad_(False)
    return visual.eval(), head.eval()


def resume(state_path: Path, run: dict, visual, head, optimizer, schedule) -> tuple[int, list, float, tuple | None]:
    """(first epoch, validation log, seconds spent, label anchor) of a stopped or finished run, its weights and
    optimizer restored; a new run's (0, [], 0.0, None) when there is none, or only a finished run with other
    settings. The augmentation and the batch order are seeded by epoch, so the rest of the run is the one it would
    have been."""
    import torch

    if not state_path.is_file():
        return 0, [], 0.0, None
    state = torch.load(state_path, map_location=next(visual.parameters()).device, weights_only=True)
    finished = state["epoch"] == state["run"]["config"]["epochs"]
    if state["run"] != run and finished:
        return 0, [], 0.0, None  # nothing of it is lost: it can be rebuilt with its own settings
    if state["run"] != run:
        raise ConfigError(f"{state_path} is from a pretraining run with other settings or images; start that run "
                          "again as it was, or delete the file to start over")
    visual.load_state_dict(state["visual"])
    head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    anchor = None
    if state.get("anchor"):
        anchor = frozen_copy(visual, head)
        anchor[0].load_state_dict(state["anchor"]["visual"])
        anchor[1].load_state_dict(state["anchor"]["head"])
    done = "taking the finished tower of epoch" if finished else "resuming after epoch"
    print(f"encoder: {done} {state['epoch']} from {state_path} (delete it to train anew)", flush=True)
    return state["epoch"], state["log"], state["seconds"], anchor


def pretrain(model_dir: str | Path, train: list[Item], val: list[Item], config: EncoderConfig,
             state_path: Path | None = None) -> dict:
    """Train the checkpoint's vision tower in place (validation only watches), going on from a stopped run's
    state in `state_path` (default: the checkpoint's `encoder_state.pt`) if there is one; returns the validation log."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(config.seed)
    device = training_device()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    image_processor = AutoProcessor.from_pretrained(model_dir).image_processor
    visual = model.model.visual.to(device)
    linear_patch_embed(visual)
    head = heads(model.config.vision_config.out_hidden_size).to(device)
    params = [*visual.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=steps, pct_start=0.1)
    workers = loader_workers()
    state_path, run = Path(state_path or Path(model_dir) / STATE_FILE), fingerprint(train, config)
    first, log, spent, anchor = resume(state_path, run, visual, head, optimizer, schedule)

    def collate(samples):
        images, labels, boxes = zip(*samples)
        return (image_processor(images=list(images), return_tensors="pt"),
                torch.from_numpy(np.stack(labels)), torch.from_numpy(np.stack(boxes).astype(np.float32)))

    start = time.perf_counter() - spent
    for epoch in range(first, config.epochs):
        if epoch == config.label_anchor and anchor is None:
            anchor = frozen_copy(visual, head)
        order = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(Augmented(train, config, epoch), batch_size=config.batch_size,
                                             shuffle=True, generator=order, num_workers=workers, collate_fn=collate)
        for batch, labels, boxes in loader:
            outputs = forward(visual, head, batch)
            with torch.no_grad():
                anchored = forward(*anchor, batch) if anchor else None
            loss = loss_fn(outputs, labels.to(device), boxes.to(device), config.box_weight, config.token_weight,
                           anchored)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
        if (epoch + 1) % config.eval_every and epoch + 1 < config.epochs:
            continue
        scores = evaluate(visual, head, image_processor, val, config.min_positives)
        log.append({"epoch": epoch + 1, "loss": round(loss.item(), 4), **scores})
        print(f"encoder epoch {epoch + 1}/{config.epochs} loss {loss.item():.4f} val macro AUROC "
              f"{scores['macro_auroc']} lung IoU {scores['lung_iou']} | {time.perf_counter() - start:.0f} s", flush=True)
        torch.save({"epoch": epoch + 1, "log": log, "seconds": time.perf_counter() - start, "run": run,
                    "visual": visual.state_dict(), "head": head.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "anchor": {"visual": anchor[0].state_dict(), "head": anchor[1].state_dict()} if anchor else None},
                   state_path.with_suffix(".tmp"))
        os.replace(state_path.with_suffix(".tmp"), state_path)  # a run stopped while saving keeps the last state
    visual.to("cpu")
    del visual.patch_embed.forward  # back to the module's own Conv3d forward before saving
    model.save_pretrained(model_dir, safe_serialization=True)
    return {"epochs": log, "seconds": round(time.perf_counter() - start)}
