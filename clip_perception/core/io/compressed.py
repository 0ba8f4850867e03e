"""Compressed images (as in sensor_msgs/CompressedImage) to frames, with cv2.imdecode.

No ROS import. ``format`` is image_transport's: ``"jpeg"``, ``"png"``, or the
compressed plugin's ``"rgb8; jpeg compressed bgr8"``. A corrupt or truncated
payload raises :class:`CompressedImageError`: libjpeg decodes a truncated
JPEG to a grey-filled image with only a warning, so the end markers are
checked first.
"""

from __future__ import annotations

import numpy as np

from .image_formats import MAX_PIXELS, Frame

JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"


class CompressedImageError(ValueError):
    """The payload is not a decodable jpeg or png; the message says why."""


def codec_of(fmt: str, data: bytes) -> str:
    """``"jpeg"`` or ``"png"`` from the format string, else from the magic bytes."""
    text = (fmt or "").lower()
    for name, codec in (("jpeg", "jpeg"), ("jpg", "jpeg"), ("png", "png")):
        if name in text:
            return codec
    if data[:2] == JPEG_SOI:
        return "jpeg"
    if data[:8] == PNG_SIGNATURE:
        return "png"
    raise CompressedImageError(f"unsupported compressed format {fmt!r} (jpeg or png)")


def _check_complete(codec: str, data: bytes) -> None:
    if codec == "jpeg":
        if data[:2] != JPEG_SOI:
            raise CompressedImageError("not a JPEG: no start-of-image marker")
        if JPEG_EOI not in data[-16:]:
            raise CompressedImageError(f"truncated JPEG: no end-of-image marker in "
                                       f"{len(data)} bytes")
    else:
        if data[:8] != PNG_SIGNATURE:
            raise CompressedImageError("not a PNG: bad signature")
        if PNG_IEND not in data[-16:]:
            raise CompressedImageError(f"truncated PNG: no IEND chunk in {len(data)} bytes")


def decode_compressed(fmt: str, data) -> Frame:
    """Decode a jpeg or png payload to an 8-bit :class:`Frame` (bgr, bgra or mono).

    Raises:
        CompressedImageError: empty, unsupported, truncated or corrupt payload.
    """
    import cv2

    data = bytes(data)
    if not data:
        raise CompressedImageError("empty compressed image")
    codec = codec_of(fmt, data)
    _check_complete(codec, data)
    buffer = np.frombuffer(data, np.uint8)
    try:
        pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # pragma: no cover - cv2 usually returns None instead
        raise CompressedImageError(f"corrupt {codec}: {exc}") from exc
    if pixels is None or pixels.size == 0:
        raise CompressedImageError(f"corrupt {codec}: cv2.imdecode could not decode "
                                   f"{len(data)} bytes")
    if pixels.shape[0] * pixels.shape[1] > MAX_PIXELS:
        raise CompressedImageError(f"decoded image {pixels.shape[1]}x{pixels.shape[0]} exceeds "
                                   f"{MAX_PIXELS} pixels")
    if pixels.dtype != np.uint8:  # 16-bit png: keep the high byte
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return Frame(pixels[:, :, None], "mono")
    order = {3: "bgr", 4: "bgra"}.get(pixels.shape[2])
    if order is None:
        raise CompressedImageError(f"{codec} with {pixels.shape[2]} channels is not supported")
    return Frame(pixels, order)


def encode_compressed(rgb: np.ndarray, codec: str = "jpeg", quality: int = 90) -> bytes:
    """An ``(H, W, 3)`` RGB array as jpeg or png bytes (for tests, bags and the demo)."""
    import cv2

    bgr = np.ascontiguousarray(np.asarray(rgb, np.uint8)[:, :, ::-1])
    ext, params = ((".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)]) if codec == "jpeg"
                   else (".png", []))
    ok, buffer = cv2.imencode(ext, bgr, params)
    if not ok:  # pragma: no cover
        raise CompressedImageError(f"could not encode {codec}")
    return buffer.tobytes()
