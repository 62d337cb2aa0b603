"""Heatmaps: which regions of the image moved an answer, in the original image's pixels.

An engine (cxrlm.engines.hf) differentiates a target (a label's yes log-odds, or the log-probability of a box's
coordinate tokens) with respect to the processor's `pixel_values`. This module turns that gradient into one score
per vision patch of the first image, lays the patches out as the model saw them, and maps the grid back to the
original image through the inverse of the processor's resize:

- Qwen2.5-VL / Qwen3-VL: `pixel_values` is [patches, C*T*P*P], the patches of each image listed merge window by
  merge window (grid_t, grid_h/m, grid_w/m, m, m); `image_grid_thw` gives the grid. The processor resizes with
  the aspect kept (smart_resize) and no crop or pad, so stretching the grid to the original size inverts it.
- Gemma 3: [images, C, S, S], the whole image stretched to a square; stretched back.
- LLaVA-OneVision: [images, tiles, C, S, S]; tile 0 is the whole image stretched to a square (the base tile),
  which is the one mapped. The high-resolution anyres tiles are not: their gradient is left out of the map.

Scores per patch (`METHODS`): "gradient", the norm of the target's gradient over the patch's pixels (Simonyan et
al., 2014); "gradxinput", the absolute first-order change of the target if the patch were set to the processor's
mean (|sum of gradient x normalized input|). Both are first-order, local explanations: they say what the target
is sensitive to, not what a radiologist would call the cause. numpy only; no torch here.
"""

from __future__ import annotations

import base64
import io

import numpy as np

METHODS = ("gradient", "gradxinput")


def patch_scores(grad: np.ndarray, pixels: np.ndarray, grid_thw, merge_size: int, patch: int,
                 method: str = "gradient") -> np.ndarray:
    """[rows, cols] scores of the first image's patches, from `pixel_values` and its gradient (same shape)."""
    if method not in METHODS:
        raise ValueError(f"unknown heatmap method {method!r}; use one of {', '.join(METHODS)}")
    if grid_thw is not None:
        return _qwen_grid(grad, pixels, grid_thw, merge_size, method)
    if grad.ndim == 5:  # LLaVA-OneVision: [images, tiles, C, S, S]; the base tile of the first image
        grad, pixels = grad[:, 0], pixels[:, 0]
    if grad.ndim != 4:
        raise ValueError(f"pixel_values of shape {grad.shape} is not a layout cxrlm.heatmaps knows")
    g, x = grad[0], pixels[0]  # [C, S, S]
    rows, cols = g.shape[1] // patch, g.shape[2] // patch

    def blocks(a):  # [C, S, S] -> [rows, cols, C * patch * patch]
        a = a[:, : rows * patch, : cols * patch].reshape(a.shape[0], rows, patch, cols, patch)
        return a.transpose(1, 3, 0, 2, 4).reshape(rows, cols, -1)

    return _score(blocks(g), blocks(x), method)


def _qwen_grid(grad, pixels, grid_thw, merge: int, method: str) -> np.ndarray:
    t, h, w = (int(v) for v in grid_thw[0])
    n = t * h * w
    scores = _score(grad[:n], pixels[:n], method)  # one per patch, in merge-window order
    scores = scores.reshape(t, h // merge, w // merge, merge, merge).transpose(0, 1, 3, 2, 4).reshape(t, h, w)
    return scores.sum(0)


def _score(g: np.ndarray, x: np.ndarray, method: str) -> np.ndarray:
    if method == "gradient":
        return np.sqrt((g.astype(np.float64) ** 2).sum(-1))
    return np.abs((g.astype(np.float64) * x).sum(-1))


def to_original(scores: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The patch grid stretched (bilinear) to the original (width, height): [height, width] float32, summing to 1
    (all zeros when the target did not depend on the image at all)."""
    from PIL import Image

    width, height = size
    heat = np.asarray(Image.fromarray(scores.astype(np.float32), mode="F").resize((width, height),
                                                                                Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0, None)
    total = float(heat.sum())
    return (heat / total if total > 0 else heat).astype(np.float32)


def mass_inside(heat: np.ndarray, xyxy) -> float:
    """The share of the map's mass inside a box given in pixels of the map's image (x1, y1, x2, y2)."""
    height, width = heat.shape
    x1, y1, x2, y2 = (int(round(v)) for v in xyxy)
    x1, x2 = max(0, x1), min(width, x2)
    y1, y2 = max(0, y1), min(height, y2)
    total = float(heat.sum())
    return float(heat[y1:y2, x1:x2].sum()) / total if total > 0 and x2 > x1 and y2 > y1 else 0.0


def area_fraction(size: tuple[int, int], xyxy) -> float:
    """A uniform map's mass inside the box: the box's share of the image area."""
    width, height = size
    x1, y1, x2, y2 = xyxy
    return max(0.0, min(x2, width) - max(x1, 0)) * max(0.0, min(y2, height) - max(y1, 0)) / (width * height)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of one image (Adebayo et al., 2018 compare maps this way)."""
    from scipy.stats import spearmanr

    rho = spearmanr(a.ravel(), b.ravel()).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def overlay_png(gray: np.ndarray, heat: np.ndarray) -> bytes:
    """The image in gray with the map over it in a black-red-yellow-white scale, as PNG bytes of the image's size.
    The map is scaled to its 99th percentile, so that one hot patch does not wash out the rest."""
    from PIL import Image

    top = float(np.percentile(heat, 99)) or float(heat.max()) or 1.0
    h = np.clip(heat / top, 0.0, 1.0)[..., None]
    colour = np.concatenate([np.clip(3 * h, 0, 1), np.clip(3 * h - 1, 0, 1), np.clip(3 * h - 2, 0, 1)], -1)
    base = np.repeat(_as_uint8(gray)[..., None], 3, -1).astype(np.float32) / 255.0
    alpha = 0.6 * h
    rgb = ((1 - alpha) * base + alpha * colour) * 255.0
    buffer = io.BytesIO()
    Image.fromarray(rgb.round().astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _as_uint8(gray: np.ndarray) -> np.ndarray:
    if gray.dtype == np.uint8:
        return gray
    low, high = float(gray.min()), float(gray.max())
    return ((gray - low) / ((high - low) or 1.0) * 255.0).round().astype(np.uint8)
