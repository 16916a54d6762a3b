"""Incoming images for the radiology tool, decoded within bounds: base64 -> bytes (at most `max_bytes`), the
format recognised from the bytes (PNG, JPEG, DICOM; the declared media type must agree), the pixel count checked
from the header before any pixel is decoded, truncated or malformed files refused. DICOM goes through the
PS3.15 de-identification of the training data (hai_tools.deid: burned-in text refused unless the server's policy
allows it with a recorded reason) before its pixels are windowed to 8 bits. Errors are `ImageRejected`, typed,
and name the problem, never the file's content; nothing of an image is logged."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import secrets
from dataclasses import dataclass
from typing import Any

from hai_tools.errors import HaiError

MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


class ImageRejected(HaiError):
    """The image cannot be read: too large, truncated, not an image, or refused by de-identification."""


@dataclass
class DecodedImage:
    image: Any  # PIL RGB
    media_type: str
    width: int
    height: int
    sha256: str  # of the decoded (and, for DICOM, de-identified) pixels

    def describe(self) -> dict[str, Any]:
        return {
            "media_type": self.media_type,
            "width": self.width,
            "height": self.height,
            "sha256": self.sha256,
        }


def sniff(data: bytes) -> str | None:
    for magic, media_type in MAGIC.items():
        if data.startswith(magic):
            return media_type
    if len(data) > 132 and data[128:132] == b"DICM":
        return "application/dicom"
    return None


def decode_image(
    encoded: str,
    declared: str | None,
    max_bytes: int,
    max_pixels: int,
    deid_policy: Any = None,
) -> DecodedImage:
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected("image_base64 is not valid base64") from None
    if len(data) > max_bytes:
        raise ImageRejected(f"image is {len(data)} bytes; the limit is {max_bytes}")
    found = sniff(data)
    if found is None:
        raise ImageRejected("not a PNG, JPEG or DICOM file")
    if declared is not None and declared != found:
        raise ImageRejected(f"media_type says {declared} but the bytes are {found}")
    if found == "application/dicom":
        return _dicom(data, max_pixels, deid_policy)
    return _raster(data, found, max_pixels)


def _raster(data: bytes, media_type: str, max_pixels: int) -> DecodedImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise ImageRejected(f"image is {width}x{height} pixels; the limit is {max_pixels}")
            opened.load()
            image = opened.convert("RGB")
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageRejected(
            f"unreadable {media_type}: {type(exc).__name__} (truncated or malformed)"
        ) from None
    return DecodedImage(image, media_type, width, height, hashlib.sha256(image.tobytes()).hexdigest())


def _dicom(data: bytes, max_pixels: int, deid_policy: Any) -> DecodedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    from hai_tools.deid import DeidPolicy, DeidRefused, deidentify
    from hai_tools.radiology import dicom_pixels, rgb_image

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except (InvalidDicomError, AttributeError, ValueError, KeyError, OSError, EOFError) as exc:
        raise ImageRejected(f"unreadable DICOM: {type(exc).__name__}") from None
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if rows * columns * frames > max_pixels:
        raise ImageRejected(f"DICOM is {columns}x{rows}x{frames} pixels; the limit is {max_pixels}")
    try:  # a one-off salt: nothing of this file is kept, so its pseudonyms need not be stable
        deidentify(dataset, "p-inference", secrets.token_hex(16), deid_policy or DeidPolicy())
    except DeidRefused as exc:
        raise ImageRejected(f"DICOM refused by de-identification: {exc}") from None
    try:
        pixels = dicom_pixels(dataset)
    except (AttributeError, ValueError, KeyError, OSError, EOFError) as exc:
        raise ImageRejected(f"unreadable DICOM pixel data: {type(exc).__name__}") from None
    image = rgb_image(pixels)
    return DecodedImage(
        image, "application/dicom", columns, rows, hashlib.sha256(image.tobytes()).hexdigest()
    )
