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


# A PACS (cxrlm.pacs): what one query or study may bring back, checked before anything is decoded.
MAX_PACS_STUDIES = 200  # studies one QIDO search may return (narrow the query past this)
MAX_PACS_INSTANCES = 100  # instances of any kind listed in one study (of them, at most MAX_IMAGES radiographs are read)
MAX_PACS_BYTES = 128 * 2**20  # bytes of one PACS response: one instance (a 4k x 4k 16-bit radiograph is 32 MiB)
PACS_TIMEOUT = (5.0, 60.0)  # seconds: connecting, then waiting for each read
