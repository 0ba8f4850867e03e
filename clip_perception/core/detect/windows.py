"""Sliding-window geometry: square windows over a frame or a region of it.

Boxes are ``int64`` arrays of ``(x0, y0, x1, y1)`` in pixels of the original
frame, with ``x1`` and ``y1`` exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def positions(start: int, length: int, size: int, step: int) -> list[int]:
    """Offsets of windows of ``size`` every ``step`` over ``[start, start+length)``.

    The last window is moved back so it ends exactly at the edge: windows are
    clipped to the frame without being cut short.
    """
    if size >= length:
        return [start]
    last = length - size
    offsets = list(range(0, last + 1, max(1, step)))
    if offsets[-1] != last:
        offsets.append(last)
    return [start + o for o in offsets]


def grid(region: Sequence[int], size: int, stride: float) -> np.ndarray:
    """Square windows of side ``size`` over ``region`` = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (int(v) for v in region)
    width, height = x1 - x0, y1 - y0
    side = max(1, min(int(size), width, height))
    step = max(1, int(round(side * stride)))
    xs = positions(x0, width, side, step)
    ys = positions(y0, height, side, step)
    boxes = [(x, y, x + side, y + side) for y in ys for x in xs]
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)


def window_grid(
    width: int,
    height: int,
    scales: Sequence[float],
    stride: float,
    include_full_frame: bool = True,
) -> np.ndarray:
    """Multi-scale windows over a ``width`` x ``height`` frame.

    Each scale is a window side as a fraction of the frame's short side; the
    stride is a fraction of the window side. The whole frame, if included,
    comes first.
    """
    if width < 1 or height < 1:
        raise ValueError(f"frame size {width}x{height} is empty")
    parts = []
    if include_full_frame:
        parts.append(np.array([[0, 0, width, height]], dtype=np.int64))
    short = min(width, height)
    for scale in scales:
        side = max(1, int(round(scale * short)))
        parts.append(grid((0, 0, width, height), side, stride))
    if not parts:
        return np.zeros((0, 4), dtype=np.int64)
    return np.concatenate(parts, axis=0)


def whole_frame_mask(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """True for boxes that cover the whole ``width`` x ``height`` frame."""
    return ((boxes[:, 0] == 0) & (boxes[:, 1] == 0)
            & (boxes[:, 2] == width) & (boxes[:, 3] == height))


def sliding_indices(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Indices of the boxes that are not the whole frame (all, if every box is)."""
    partial = ~whole_frame_mask(boxes, width, height)
    return np.flatnonzero(partial) if partial.any() else np.arange(len(boxes))


def box_intersection(a: Sequence[float], b: Sequence[float]) -> float:
    """Area shared by two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    inter = box_intersection(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
