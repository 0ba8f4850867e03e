"""The pinhole camera model of sensor_msgs/CameraInfo, and back-projection.

No ROS import: the node passes CameraInfo's ``k``, ``width`` and ``height``.
Pixel (u, v) with u to the right and v down, at depth z along the optical
axis, is the point ((u - cx) z / fx, (v - cy) z / fy, z) in the camera's
optical frame (REP 103: x right, y down, z forward). As in OpenCV and
CameraInfo, pixel (i, j)'s centre is at u = i, v = j; a box's x0..x1
(exclusive) therefore spans pixel centres x0 .. x1 - 1.

Which matrix: as image_geometry's PinholeCameraModel, a rectified image
(``P``'s left 3x3 differs from ``K``) is projected with ``P``; otherwise
``K``. Distortion (``d``) is not undone: on an unrectified image of a
distorting lens, positions away from the image centre are off by the
distortion there (subscribe the driver's ``image_rect`` to avoid it).
``P``'s ``Tx``/``Ty`` (a stereo pair's second camera) are ignored: points are
in this camera's own optical frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class CameraModelError(ValueError):
    """Unusable intrinsics (a zero or non-finite focal length, an empty image)."""


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics of an image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.fx, self.fy, self.cx, self.cy)):
            raise CameraModelError("camera_info has a non-finite intrinsic")
        if self.fx <= 0 or self.fy <= 0:
            raise CameraModelError(f"camera_info has focal length fx={self.fx} fy={self.fy}; "
                                   "both must be > 0 (is the camera calibrated?)")
        if self.width <= 0 or self.height <= 0:
            raise CameraModelError(f"camera_info has image size {self.width}x{self.height}")

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> PinholeCamera:
        """From CameraInfo's row-major 3x3 ``k`` (fx 0 cx / 0 fy cy / 0 0 1)."""
        k = [float(v) for v in k]
        if len(k) != 9:
            raise CameraModelError(f"k has {len(k)} values, not 9")
        return cls(k[0], k[4], k[2], k[5], int(width), int(height))

    @classmethod
    def from_info(cls, k: Sequence[float], p: Sequence[float], width: int,
                  height: int) -> PinholeCamera:
        """From CameraInfo's ``k`` and ``p`` (3x4): ``p`` where it describes a rectified
        image (set, and its left 3x3 is not ``k``), else ``k``."""
        p = [float(v) for v in p]
        if len(p) == 12 and p[0] != 0.0 and p[5] != 0.0:
            rect = (p[0], p[1], p[2], p[4], p[5], p[6], p[8], p[9], p[10])
            if list(rect) != [float(v) for v in k]:
                return cls.from_k(rect, width, height)
        return cls.from_k(k, width, height)

    def scaled(self, width: int, height: int) -> PinholeCamera:
        """The same camera at another resolution (same field of view). Pixel centres
        sit at whole coordinates, so a coordinate u maps to (u + 0.5) s - 0.5."""
        sx, sy = width / self.width, height / self.height
        return PinholeCamera(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                             (self.cy + 0.5) * sy - 0.5, int(width), int(height))

    def ray(self, u: np.ndarray | float, v: np.ndarray | float):
        """(x/z, y/z) of the rays through pixel coordinates (u, v)."""
        return (np.asarray(u) - self.cx) / self.fx, (np.asarray(v) - self.cy) / self.fy

    def backproject(self, u: float, v: float, z: float) -> np.ndarray:
        """The 3D point (metres, optical frame) at depth ``z`` through (u, v)."""
        rx, ry = self.ray(u, v)
        return np.array([float(rx) * z, float(ry) * z, z])

    def project(self, point: Sequence[float]) -> tuple[float, float]:
        """Pixel coordinates (u, v) of a 3D point in the optical frame."""
        x, y, z = (float(p) for p in point)
        return self.fx * x / z + self.cx, self.fy * y / z + self.cy
