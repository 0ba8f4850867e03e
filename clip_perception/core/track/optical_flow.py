"""Carry a box from one frame to the next with pyramidal Lucas-Kanade optical flow.

Corner points inside the box (its inner 80%) are tracked forward and back;
points whose round trip misses by more than a pixel are dropped, and the box
moves by the median shift and scales by the median ratio of point distances.
"""

from __future__ import annotations

import numpy as np

MAX_POINTS = 60
MIN_POINTS = 5
ROUND_TRIP_PX = 1.0
LK_WINDOW = 21
LK_LEVELS = 3


def grey(pixels: np.ndarray, order: str = "rgb") -> np.ndarray:
    """A uint8 grey image of an ``(H, W, C)`` or ``(H, W)`` frame."""
    import cv2

    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels)
    code = cv2.COLOR_BGR2GRAY if order.startswith("bgr") else cv2.COLOR_RGB2GRAY
    return cv2.cvtColor(np.ascontiguousarray(pixels[:, :, :3]), code)


def flow_box(previous: np.ndarray, current: np.ndarray, box
             ) -> tuple[float, float, float] | None:
    """``(dx, dy, scale)`` of ``box`` from grey ``previous`` to grey ``current``, or None
    when too few points inside the box can be tracked."""
    import cv2

    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = previous.shape[:2]
    mx, my = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
    c0, r0 = int(max(x0 + mx, 0)), int(max(y0 + my, 0))
    c1, r1 = int(min(x1 - mx, w)), int(min(y1 - my, h))
    if c1 - c0 < 4 or r1 - r0 < 4:
        return None
    mask = np.zeros((h, w), np.uint8)
    mask[r0:r1, c0:c1] = 255
    points = cv2.goodFeaturesToTrack(previous, MAX_POINTS, 0.01, 3, mask=mask)
    if points is None or len(points) < MIN_POINTS:
        return None
    params = dict(winSize=(LK_WINDOW, LK_WINDOW), maxLevel=LK_LEVELS,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
    forward, ok1, _ = cv2.calcOpticalFlowPyrLK(previous, current, points, None, **params)
    back, ok2, _ = cv2.calcOpticalFlowPyrLK(current, previous, forward, None, **params)
    good = (ok1.ravel() == 1) & (ok2.ravel() == 1) & (
        np.linalg.norm((back - points).reshape(-1, 2), axis=1) <= ROUND_TRIP_PX)
    if good.sum() < MIN_POINTS:
        return None
    p0, p1 = points.reshape(-1, 2)[good], forward.reshape(-1, 2)[good]
    dx, dy = np.median(p1 - p0, axis=0)
    d0 = np.linalg.norm(p0 - p0.mean(0), axis=1)
    d1 = np.linalg.norm(p1 - p1.mean(0), axis=1)
    keep = d0 > 2.0
    scale = float(np.median(d1[keep] / d0[keep])) if keep.sum() >= 3 else 1.0
    return float(dx), float(dy), float(np.clip(scale, 0.8, 1.25))


def moved_box(box, dx: float, dy: float, scale: float) -> tuple[float, float, float, float]:
    """``box`` shifted by (dx, dy) and scaled about its centre."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2 + dx, (y0 + y1) / 2 + dy
    hw, hh = (x1 - x0) * scale / 2, (y1 - y0) * scale / 2
    return (cx - hw, cy - hh, cx + hw, cy + hh)
