"""Image statistics the gate's classifier reads: layout, histogram, edges, symmetry, colour. numpy and Pillow only.

A chest radiograph has a typical layout (dark lungs either side of a bright mediastinum on a frontal view, one
dark lung field with the spine at one edge on a lateral), a wide smooth histogram and soft edges; photographs,
documents, CT/MR slices and synthetic images differ in at least one of these. Every feature is computed on a
64x64 (or 128x128) copy, so the cost does not grow with the image (a few ms for a 3000 px radiograph).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

GRID = 8  # the layout thumbnail is GRID x GRID cells of the standardized image
BINS = 16  # gray-level histogram bins
EPS = 1e-6


def image_features(pixels: np.ndarray, saturation: float = 0.0) -> np.ndarray:
    """One feature vector for an (H, W) uint8 image; `saturation` is the colour file's mean RGB spread (0-1)."""
    height, width = pixels.shape
    source = Image.fromarray(pixels)
    small = _resized(source, 64)
    mid = _resized(source, 128)
    z = (small - small.mean()) / (small.std() + EPS)
    layout = z.reshape(GRID, 64 // GRID, GRID, 64 // GRID).mean(axis=(1, 3)).ravel()
    histogram = np.histogram(small, bins=BINS, range=(0.0, 1.0))[0] / small.size
    return np.concatenate([layout, histogram, _statistics(small, mid, z), [np.log(width / height), saturation]])


def _resized(image: Image.Image, side: int) -> np.ndarray:
    return np.asarray(image.resize((side, side), Image.BILINEAR, reducing_gap=2.0), dtype=np.float64) / 255.0


def _statistics(small: np.ndarray, mid: np.ndarray, z: np.ndarray) -> list[float]:
    """Moments, clipping, edges, flat areas, fine texture, left-right symmetry, row and column contrast."""
    dx, dy = np.abs(np.diff(mid, axis=1)), np.abs(np.diff(mid, axis=0))
    gradient = np.concatenate([dx.ravel(), dy.ravel()])
    laplacian = np.abs(4 * mid[1:-1, 1:-1] - mid[:-2, 1:-1] - mid[2:, 1:-1] - mid[1:-1, :-2] - mid[1:-1, 2:])
    std = small.std() + EPS
    columns, rows = z.mean(axis=0), z.mean(axis=1)
    return [
        small.mean(), small.std(), float((z**3).mean()), float((z**4).mean()),
        float((small < 0.02).mean()), float((small > 0.98).mean()),
        float(gradient.mean() / std), float((gradient > 0.25).mean()), float((gradient < 0.002).mean()),
        float(laplacian.mean() / std),
        float(np.corrcoef(z.ravel(), z[:, ::-1].ravel())[0, 1]) if z.std() > EPS else 0.0,
        float(columns.std()), float(rows.std()),
        len(np.unique(np.rint(mid * 255))) / 256.0,
    ]  # fmt: skip


def colour_saturation(rgb: np.ndarray) -> float:
    """Mean spread between the R, G and B channels (0 for a gray image, about 0.1-0.4 for a colour photograph),
    on at most 128x128 pixels: a radiograph saved as RGB has none."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        return 0.0
    step = max(1, max(rgb.shape[:2]) // 128)
    sample = rgb[::step, ::step, :3].astype(np.float64)
    return float((sample.max(axis=2) - sample.min(axis=2)).mean() / 255.0)
