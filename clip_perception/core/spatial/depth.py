"""Depth image buffers (as in sensor_msgs/Image) to metres, with validity.

No ROS import. Two encodings, REP 118's:

* ``16UC1``: unsigned millimetres; 0 means "no reading" (``mono16``, which some
  drivers use for the same data, is read as millimetres too);
* ``32FC1``: float metres; 0, NaN and +-inf mean "no reading".

:func:`decode_depth` returns a float32 ``(H, W)`` array in metres in which a
missing reading is NaN (NaN or inf) or 0.0 (zero), whatever the encoding: one
validity test (finite and > 0) serves both, and "all zero" and "all NaN"
remain distinguishable reasons.
"""

from __future__ import annotations

import numpy as np

DEPTH_ENCODINGS = {"16UC1": (np.dtype("<u2"), 0.001), "mono16": (np.dtype("<u2"), 0.001),
                   "32FC1": (np.dtype("<f4"), 1.0)}
MAX_PIXELS = 8192 * 8192


class DepthFormatError(ValueError):
    """The buffer is not a usable depth image; the message names the problem."""


def decode_depth(encoding: str, height: int, width: int, step: int, data,
                 is_bigendian: int = 0) -> np.ndarray:
    """Depth in metres, float32 ``(height, width)``: NaN for NaN/inf, 0.0 for a zero reading.

    Rows may be padded (``step`` > ``width`` x bytes per pixel).

    Raises:
        DepthFormatError: unsupported encoding or inconsistent sizes.
    """
    spec = DEPTH_ENCODINGS.get(encoding)
    if spec is None:
        raise DepthFormatError(f"unsupported depth encoding '{encoding}'; supported: "
                               "16UC1 (millimetres), 32FC1 (metres)")
    dtype, scale = spec
    if is_bigendian:
        dtype = dtype.newbyteorder(">")
    if height <= 0 or width <= 0:
        raise DepthFormatError(f"depth image is empty ({width}x{height})")
    if height * width > MAX_PIXELS:
        raise DepthFormatError(f"depth image {width}x{height} exceeds {MAX_PIXELS} pixels")
    row = width * dtype.itemsize
    if step < row or step % dtype.itemsize:
        raise DepthFormatError(f"step {step} does not fit rows of {width} x {dtype.itemsize} "
                               "bytes")
    buffer = np.frombuffer(data, dtype=np.uint8)
    needed = step * (height - 1) + row
    if buffer.size < needed or buffer.size > step * height:
        raise DepthFormatError(f"data holds {buffer.size} bytes; {height} rows of step {step} "
                               f"need {needed} to {step * height}")
    if buffer.size < step * height:
        buffer = np.concatenate([buffer, np.zeros(step * height - buffer.size, np.uint8)])
    rows = buffer.reshape(height, step)[:, :row]
    values = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    metres = values.astype(np.float32) * np.float32(scale)
    metres[~np.isfinite(metres) | (metres < 0)] = np.nan
    return metres


def encode_depth(metres: np.ndarray, encoding: str) -> tuple[bytes, int]:
    """``metres`` (NaN = no reading) as a little-endian buffer and its row step.

    The inverse of :func:`decode_depth`, for tests, bags and generated scenes.
    """
    metres = np.asarray(metres, dtype=np.float64)
    if encoding == "16UC1":
        mm = np.where(np.isfinite(metres), np.round(metres * 1000.0), 0.0)
        values = np.clip(mm, 0, 65535).astype("<u2")
    elif encoding == "32FC1":
        values = np.where(np.isfinite(metres), metres, np.nan).astype("<f4")
    else:
        raise DepthFormatError(f"unsupported depth encoding '{encoding}'")
    return values.tobytes(), int(values.shape[1] * values.itemsize)
