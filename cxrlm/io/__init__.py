"""Reading radiographs: `load_image` for one file (PNG, JPEG, TIFF, BMP, DICOM), `load_study` for several views.

Both return de-identified, display-ready 8-bit grayscale (see cxrlm.types.XrayImage).
"""

from cxrlm.io.image import assign_views, load_image, load_study

__all__ = ["assign_views", "load_image", "load_study"]
