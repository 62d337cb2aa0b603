"""The size of a compressed image, read from its own header before it is decoded.

A DICOM's Rows/Columns are only a claim: the decoder allocates what the codestream says. So for each compressed
transfer syntax the frame header is read first: JPEG (SOF0-SOF15), JPEG-LS (SOF55) and JPEG 2000 / HTJ2K (SIZ,
also inside a JP2 wrapper). RLE has no size of its own: its decoder allocates from Rows/Columns.
"""

from __future__ import annotations

import struct

J2K_START = b"\xff\x4f\xff\x51"  # SOC then SIZ: every JPEG 2000 codestream starts so
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
JP2_SEARCH = 65_536  # bytes of a JP2 file searched for the codestream (header boxes come first)
# Frame header markers: SOF0-SOF15 less DHT (C4), JPG (C8) and DAC (CC); and JPEG-LS's SOF55 (F7).
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}  # RSTn, TEM, SOI: no length field


def frame_size(frame: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) from a JPEG, JPEG-LS or JPEG 2000 frame header; None if there is none."""
    if frame.startswith(J2K_START):
        return _siz(frame, 0)
    if frame.startswith(JP2_SIGNATURE):
        start = frame.find(J2K_START, 0, JP2_SEARCH)
        return _siz(frame, start) if start >= 0 else None
    if frame.startswith(b"\xff\xd8"):
        return _sof(frame)
    return None


def _siz(data: bytes, start: int) -> tuple[int, int, int] | None:
    """SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz (ISO 15444-1 A.5.1)."""
    fields = ">HHIIIIIIIIH"
    if len(data) < start + 4 + struct.calcsize(fields):
        return None
    _, _, width, height, x_offset, y_offset, *_, components = struct.unpack_from(fields, data, start + 4)
    return max(height - y_offset, 0), max(width - x_offset, 0), components


def _sof(data: bytes) -> tuple[int, int, int] | None:
    """Walk the marker segments from SOI to the first frame header: P, Y (rows), X (columns), Nf (ITU T.81 B.2.2)."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker in STANDALONE_MARKERS:
            at += 2
        elif marker in SOF_MARKERS:
            if at + 10 > len(data):
                return None
            rows, columns = struct.unpack_from(">HH", data, at + 5)
            return rows, columns, data[at + 9]
        elif marker in (0xDA, 0xD9):  # a scan or the end before any frame header
            return None
        else:
            at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return None
