"""Which part of the original image a model's normalized box coordinates span, per the profile's `box_frame`.

A model that saw its input stretched or resized whole ("image") writes coordinates of the whole image. One that saw
the image centred on a padded square ("square_pad", LLaVA-1.5's pad mode) writes coordinates of that square, which
reaches past the image; one that saw a centre crop ("center_crop", CLIP-style processors) writes coordinates of
the crop. Pixel boxes (Qwen2.5-VL) are mapped through the engine's input size instead, not here.
"""


def view_region(box_frame: str, image_size: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) in original pixels that normalized coordinates 0..1 span; None for the whole image."""
    width, height = image_size
    if box_frame == "image":
        return None
    if box_frame == "square_pad":
        side = max(width, height)
    elif box_frame == "center_crop":
        side = min(width, height)
    else:
        raise ValueError(f"unknown box frame {box_frame!r}")
    return ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
