"""cxrlm: a toolkit for chest X-ray reasoning vision-language models.

For research and education only; not a medical device and never for diagnosis.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "Research and education use only. Not a medical device; not for diagnosis or treatment decisions. "
    "Output may be wrong and must be reviewed by a qualified radiologist."
)
