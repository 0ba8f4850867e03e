"""Raw image buffers (as in sensor_msgs/Image) to zero-copy numpy views.

No ROS import: the node passes the message's fields. Channel order is not
changed here; the pipeline reorders channels on the encoder's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# encoding -> (channels, channel order as seen in memory)
ENCODINGS: dict[str, tuple[int, str]] = {
    "rgb8": (3, "rgb"),
    "bgr8": (3, "bgr"),
    "rgba8": (4, "rgba"),
    "bgra8": (4, "bgra"),
    "mono8": (1, "mono"),
}
MAX_PIXELS = 8192 * 8192


class ImageFormatError(ValueError):
    """The buffer is not a usable image; the message names the problem."""


@dataclass(frozen=True)
class Frame:
    """An 8-bit image view: ``pixels`` is ``(H, W, C)`` in ``order``."""

    pixels: np.ndarray
    order: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @classmethod
    def from_rgb(cls, array: np.ndarray) -> Frame:
        """Wrap an ``(H, W, 3)`` uint8 RGB array."""
        array = np.asarray(array)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ImageFormatError(
                f"expected an (H, W, 3) uint8 RGB array, got {array.shape} {array.dtype}"
            )
        return cls(array, "rgb")

    def to_rgb(self) -> np.ndarray:
        """A contiguous ``(H, W, 3)`` RGB copy (for drawing and saving)."""
        p = self.pixels
        if self.order == "mono":
            return np.repeat(p, 3, axis=2)
        if self.order.startswith("bgr"):
            return np.ascontiguousarray(p[:, :, 2::-1])
        return np.ascontiguousarray(p[:, :, :3])


def frame_from_buffer(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data,
    is_bigendian: int = 0,
) -> Frame:
    """View ``data`` (bytes, array.array or numpy) as a :class:`Frame` without copying.

    Rows may be padded: ``step`` is the row length in bytes and may exceed
    ``width * channels``.

    Raises:
        ImageFormatError: unsupported encoding or inconsistent sizes.
    """
    spec = ENCODINGS.get(encoding)
    if spec is None:
        raise ImageFormatError(
            f"unsupported encoding '{encoding}'; supported: {', '.join(ENCODINGS)}"
        )
    channels, order = spec
    if height <= 0 or width <= 0:
        raise ImageFormatError(f"image is empty ({width}x{height})")
    if height * width > MAX_PIXELS:
        raise ImageFormatError(f"image {width}x{height} exceeds {MAX_PIXELS} pixels")
    row = width * channels
    if step < row:
        raise ImageFormatError(
            f"step {step} is shorter than a row of {width} px x {channels} bytes = {row}"
        )
    buffer = np.frombuffer(data, dtype=np.uint8)
    needed = step * (height - 1) + row
    if buffer.size < needed:
        raise ImageFormatError(
            f"data holds {buffer.size} bytes; {height} rows of step {step} need {needed}"
        )
    if buffer.size > step * height:
        raise ImageFormatError(
            f"data holds {buffer.size} bytes, more than height x step = {step * height}"
        )
    pixels = np.lib.stride_tricks.as_strided(
        buffer, shape=(height, width, channels), strides=(step, channels, 1), writeable=False
    )
    return Frame(pixels, order)
