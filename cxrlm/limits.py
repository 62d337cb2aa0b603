"""Bounds on what one request may carry, checked before any decoding or model work.

The defaults of `cxrlm serve` (each raised by the option named in its refusal) and the fixed limits of the
command line (`cxrlm chat` input lines, `--prior-report` files, images per study).
"""

MAX_TEXT_CHARS = 50_000  # characters of text in one request, all turns together (a long report is ~5,000)
MAX_PROMPT_TOKENS = 16_384  # the same text in the model's tokens (random Unicode can be several per character)
MAX_IMAGES = 8  # images per request, i.e. views of one study (the model sees them all at once)


def too_many_images(count: int, limit: int, raise_with: str) -> str | None:
    """The refusal for `count` images, or None when within `limit`."""
    if count <= limit:
        return None
    return f"{count} images in one study: the limit is {limit} views ({raise_with})"

