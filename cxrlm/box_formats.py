"""Box formats and box frames as data: how a model family writes a box as text, and what its numbers span.

A `BoxFormat` writes one box, given as 0-1 fractions (x0, y0, x1, y1) of its frame, as the text `[a, b, c, d]`
(or as two corner points `(a,b),(c,d)`, CheXOne's syntax), and reads those four numbers back into fractions.
Formats differ in scale (pixels of the frame, or 1, 100 or 1000 units per side), in whether the numbers are whole,
in coordinate order (x first, or y first as MedGemma 1.5 writes them) and in syntax. The instruction builder
writes with them, the parsers, the rewards and `CxrModel` read with them, and profiles name one. A box frame
(`view_region`) says which region of the original image the numbers span. No torch here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cxrlm.errors import ConfigError

ORDERS = ("xyxy", "yxyx")
SYNTAXES = ("brackets", "points")  # "[a, b, c, d]"; "(a,b),(c,d)" named by "<|ref|>label<|/ref|><|box|>...<|/box|>"


class UnknownBoxFormat(ConfigError, ValueError):
    """A box format or frame name that is not in the registry (a ValueError too, for dataclass validation)."""


@dataclass(frozen=True)
class BoxFormat:
    name: str
    scale: int | None  # units per side of the frame; None: pixels of the frame (the model input or stored image)
    order: str = "xyxy"  # "yxyx": [y0, x0, y1, x1]
    decimals: int = 0  # digits written after the point; 0 = whole numbers
    json_key: str | None = None  # several boxes are a JSON list of {json_key: [...], "label": ...}; else ", "-joined
    writer: str = ""  # who writes boxes this way
    syntax: str = "brackets"  # a SYNTAXES name; the parser reads every syntax whatever the format

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"box order {self.order!r} is not one of {', '.join(ORDERS)}")
        if self.syntax not in SYNTAXES:
            raise ValueError(f"box syntax {self.syntax!r} is not one of {', '.join(SYNTAXES)}")

    @property
    def labelled(self) -> bool:
        """Several boxes are written with their label (a JSON list, or CheXOne's <|ref|> names)."""
        return bool(self.json_key) or self.syntax == "points"

    @property
    def whole_numbers(self) -> bool:
        """Whole-number coordinates: their digits can be decoded as an expected value (cxrlm.engines.numbers)."""
        return self.decimals == 0

    @property
    def in_pixels(self) -> bool:
        """Coordinates are pixels of the frame, so the frame's exact size matters (Qwen2.5-VL's resized input)."""
        return self.scale is None

    def _units(self, frame: tuple[int, int] | None) -> tuple[float, float]:
        if self.scale is not None:
            return float(self.scale), float(self.scale)
        if frame is None:
            raise ValueError(f"box format {self.name!r} counts pixels: it needs the frame's (width, height)")
        return float(frame[0]), float(frame[1])

    def write(self, norm, frame: tuple[int, int] | None = None) -> str:
        """`[a, b, c, d]` for a box of 0-1 fractions (x0, y0, x1, y1) of the frame, clipped to the frame."""
        x_units, y_units = self._units(frame)
        x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in norm)
        values = [x0 * x_units, y0 * y_units, x1 * x_units, y1 * y_units]
        if self.order == "yxyx":
            values = [values[1], values[0], values[3], values[2]]
        numbers = [str(round(v)) if self.whole_numbers else f"{v:.{self.decimals}f}" for v in values]
        if self.syntax == "points":
            return f"({numbers[0]},{numbers[1]}),({numbers[2]},{numbers[3]})"
        return "[" + ", ".join(numbers) + "]"

    def write_boxes(self, boxes: list, frame: tuple[int, int] | None, label: str) -> str:
        """Several boxes (0-1 fractions) of one target, the way this format's writer lists them."""
        if self.syntax == "points":
            return "".join(f"<|ref|>{label}<|/ref|><|box|>{self.write(b, frame)}<|/box|>" for b in boxes)
        if self.json_key:
            return json.dumps([{self.json_key: json.loads(self.write(b, frame)), "label": label} for b in boxes])
        return ", ".join(self.write(b, frame) for b in boxes)

    def read(self, values, frame: tuple[int, int] | None = None) -> list[float]:
        """0-1 fractions (x0, y0, x1, y1) of the frame from the four numbers as written."""
        a, b, c, d = (float(v) for v in values)
        if self.order == "yxyx":
            a, b, c, d = b, a, d, c
        x_units, y_units = self._units(frame)
        return [a / x_units, b / y_units, c / x_units, d / y_units]


FORMATS = {
    f.name: f
    for f in (
        # Qwen2.5-VL: absolute pixels of its resized input, {"bbox_2d": [x1, y1, x2, y2], "label": ...}.
        BoxFormat("pixels", None, json_key="bbox_2d", writer="Qwen2.5-VL, NV-Reason-CXR"),
        BoxFormat("norm1", 1, decimals=2, writer="RadVLM"),  # [0.12, 0.30, 0.45, 0.80]
        BoxFormat("int100", 100, writer="M4CXR, cxrlm-tiny"),  # [12, 30, 45, 80]
        # Qwen3-VL: {"bbox_2d": [x1, y1, x2, y2], "label": ...} in thousandths of its (uncut) input.
        BoxFormat("int1000", 1000, json_key="bbox_2d", writer="Qwen3-VL"),
        # MedGemma 1.5 (as Gemini): {"box_2d": [y0, x0, y1, x1], "label": ...}, (y0, x0) the top-left corner, in
        # 0-1000 of the image it was shown, per Google's notebook cxr_anatomy_localization_with_hugging_face.ipynb
        # (github.com/Google-Health/medgemma/blob/main/notebooks/), whose prompt states that order and range.
        # The notebook pads the radiograph to a square first: see docs/MODELS.md for the frame this implies.
        BoxFormat("int1000_yxyx", 1000, order="yxyx", json_key="box_2d", writer="MedGemma 1.5"),
        # CheXOne: <|ref|>name<|/ref|><|box|>(x1,y1),(x2,y2)<|/box|>, as its GRPO data script writes them; the 0-100
        # scale is assumed from the script's example "(12,60),(18,87)" (see cxrlm/models/profiles.py).
        BoxFormat("int100_points", 100, syntax="points", writer="CheXOne"),
    )
}
ALIASES = {"qwen": "pixels"}  # the name `cxrlm data instructions --box-format` used first
NAMES = (*FORMATS, *ALIASES)  # every name a box format can be written under
AUTO = "auto"  # read only: four values within 0-1 are norm1, anything else pixels (rewards, unknown writers)


def get(name: str) -> BoxFormat:
    """The format called `name` (or an alias of it)."""
    format_ = FORMATS.get(ALIASES.get(name, name))
    if format_ is None:
        raise UnknownBoxFormat(f"unknown box format {name!r}; choose from: {', '.join(FORMATS)}")
    return format_


def check(name: str) -> str:
    """`name` if it can be read (a format, an alias or "auto"); a one-line error otherwise."""
    if name != AUTO:
        get(name)
    return name


def guess(values) -> BoxFormat:
    """What "auto" reads four numbers as: 0-1 fractions when all are within 0-1, else pixels."""
    return FORMATS["norm1" if all(0 <= float(v) <= 1 for v in values) else "pixels"]


def whole_numbers(name: str) -> bool:
    """Whether boxes in format `name` are whole numbers ("auto" is not known to be)."""
    return name != AUTO and get(name).whole_numbers


# ---------------------------------------------------------------- frames

# What normalized coordinates span: the whole image ("image": resized or stretched, never cut), the image centred on
# a padded square ("square_pad", LLaVA-1.5's pad mode, MedGemma's notebooks), or its centre square ("center_crop",
# CLIP-style processors). Pixel boxes (Qwen2.5-VL) are mapped through the engine's input size instead.
FRAMES = ("image", "square_pad", "center_crop")


def check_frame(name: str) -> str:
    if name not in FRAMES:
        raise UnknownBoxFormat(f"unknown box frame {name!r}; choose from: {', '.join(FRAMES)}")
    return name


def view_region(box_frame: str, image_size: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) in original pixels that normalized coordinates 0..1 span; None for the whole image."""
    width, height = image_size
    if check_frame(box_frame) == "image":
        return None
    side = max(width, height) if box_frame == "square_pad" else min(width, height)
    return ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)


def from_view(norm, view, image_size: tuple[int, int]) -> list[float]:
    """Fractions of `view` (x0, y0, x1, y1 in original pixels) -> fractions of the original image."""
    if view is None:
        return list(norm)
    x0, y0, x1, y1 = view
    width, height = image_size
    xs = [(x0 + v * (x1 - x0)) / width for v in norm[0::2]]
    ys = [(y0 + v * (y1 - y0)) / height for v in norm[1::2]]
    return [xs[0], ys[0], xs[1], ys[1]]


def to_view(norm, view, image_size: tuple[int, int]) -> list[float]:
    """Fractions of the original image -> fractions of `view` (the inverse of `from_view`)."""
    if view is None:
        return list(norm)
    x0, y0, x1, y1 = view
    width, height = image_size
    xs = [(v * width - x0) / (x1 - x0) for v in norm[0::2]]
    ys = [(v * height - y0) / (y1 - y0) for v in norm[1::2]]
    return [xs[0], ys[0], xs[1], ys[1]]
