"""A colour frame travelling with its paired depth and intrinsics (or why it has none).

No ROS import. :class:`RgbdFrame` is a :class:`~.image_formats.Frame`, so the
detector and the inference loop take it unchanged; the 3D outputs read its
``depth``, ``camera`` and ``missing``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera_model import PinholeCamera
from .image_formats import Frame
from .locate3d import DepthInvalid


@dataclass(frozen=True)
class RgbdFrame(Frame):
    """``depth`` in metres (NaN/0 = no reading) or None; ``missing`` says why when
    ``depth`` or ``camera`` is None."""

    depth: np.ndarray | None = None
    camera: PinholeCamera | None = None
    missing: DepthInvalid | None = None

    @classmethod
    def wrap(cls, frame: Frame, depth=None, camera=None, missing=None) -> RgbdFrame:
        return cls(frame.pixels, frame.order, depth, camera, missing)
