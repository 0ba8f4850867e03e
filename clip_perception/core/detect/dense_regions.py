"""Candidate regions and their boxes from a per-cell dense score map.

A dense map scores each cell on its own, so it does not saturate the way a
window does: a cell lies on the object or it does not, and only the cells
the object's edge cuts take values in between. Hence:

* :func:`margin_map`: per cell, the target's logit minus the best of the
  background and neutral prompts' (pre-softmax, as issue 7 found for windows).
* :func:`regions`: connected groups of cells above a level set between the
  map's floor (its median: most of a frame is not the object) and its peak,
  strongest first.
* :func:`fit_cells`: the box inside a region that best explains the ORDER of
  its cells' margins (:func:`~.localization.rank_fit_box` with the cells as
  windows), which places each edge inside the cells the object's edge cuts,
  whatever the encoder's response curve.
* :func:`scaled_boxes`: a box scaled about its centre (the presence crops of both modes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .localization import rank_fit_box

Box = tuple[int, int, int, int]
LEVEL = 0.5   # a region's cells: margin >= floor + LEVEL x (peak - floor)
GROW = 1      # cells added around a region before its box is fitted


def margin_map(logits: np.ndarray, n_targets: int) -> np.ndarray:
    """``[cells, classes]`` logits (targets, backgrounds, neutral) -> ``[cells, n_targets]``:
    each target's logit minus the largest background or neutral logit."""
    context = logits[:, n_targets:].max(axis=1, keepdims=True)
    return logits[:, :n_targets] - context


def regions(margin: np.ndarray, count: int, level: float = LEVEL,
            floor: float | None = None) -> list[tuple[slice, slice, float]]:
    """Up to ``count`` connected regions of ``margin`` ``[h, w]``, strongest peak first.

    Each is ``(row slice, column slice, peak)``: the bounding cells of a
    4-connected group of cells at or above ``floor + level x (peak - floor)``,
    with ``floor`` the map's median unless given. Ties in peak go to the larger
    summed height above the floor. A flat map gives its first peak cell alone.
    """
    peak = float(margin.max())
    floor = float(np.median(margin)) if floor is None else float(floor)
    if not peak > floor:
        i, j = np.unravel_index(int(np.argmax(margin)), margin.shape)
        return [(slice(i, i + 1), slice(j, j + 1), peak)]
    mask = (margin >= floor + level * (peak - floor)).astype(np.uint8)
    import cv2  # here: the crop mode, the server's detect model included, runs without it

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    found = []
    for label in range(1, n):
        x, y, w, h = (int(v) for v in stats[label, :4])
        cells = margin[labels == label]
        found.append((slice(y, y + h), slice(x, x + w), float(cells.max()),
                      float((cells - floor).sum())))
    found.sort(key=lambda c: (c[2], c[3]), reverse=True)
    return [c[:3] for c in found[:count]]


def cell_boxes(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pixel boxes ``[rows * cols, 4]`` of the grid with edges ``xs``, ``ys`` (row-major)."""
    x0, y0 = np.meshgrid(xs[:-1], ys[:-1])
    x1, y1 = np.meshgrid(xs[1:], ys[1:])
    return np.stack([x0.ravel(), y0.ravel(), x1.ravel(), y1.ravel()], axis=1)


def region_cells(margin: np.ndarray, rows: slice, cols: slice, xs: np.ndarray, ys: np.ndarray,
                 grow: int = GROW) -> tuple[np.ndarray, np.ndarray, Box]:
    """The cells of region ``(rows, cols)`` grown by ``grow`` cells each way (inside
    the grid): their pixel boxes ``[K, 4]``, their margins ``[K]`` and the grown
    region's pixel box."""
    h, w = margin.shape
    r0, r1 = max(0, rows.start - grow), min(h, rows.stop + grow)
    c0, c1 = max(0, cols.start - grow), min(w, cols.stop + grow)
    sub_x, sub_y = xs[c0:c1 + 1], ys[r0:r1 + 1]
    region = (int(sub_x[0]), int(sub_y[0]), int(sub_x[-1]), int(sub_y[-1]))
    return cell_boxes(sub_x, sub_y), margin[r0:r1, c0:c1].ravel(), region


def min_side_of(cells: np.ndarray) -> int:
    """Half the smallest cell side: the smallest box a fit may return."""
    sides = np.minimum(cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1])
    return max(1, int(sides.min()) // 2)


def fit_cells(margin: np.ndarray, rows: slice, cols: slice, xs: np.ndarray, ys: np.ndarray,
              grow: int = GROW) -> Box:
    """The box of region ``(rows, cols)`` fitted to the order of the cells' margins.

    The region is grown by ``grow`` cells each way (inside the grid); its cells
    are the windows of :func:`~.localization.rank_fit_box`, so only the ranks
    of the margins count. Pixels, x1/y1 exclusive.
    """
    cells, scores, region = region_cells(margin, rows, cols, xs, ys, grow)
    box, _ = rank_fit_box(cells, scores, region, min_side=min_side_of(cells))
    return box


def scaled_boxes(box: Box, scales: Sequence[tuple[float, float]], width: int,
                 height: int) -> np.ndarray:
    """``box`` scaled about its centre by each ``(sx, sy)``, inside the frame, ``[S, 4]``."""
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    out = []
    for sx, sy in scales:
        hw, hh = max(1.0, w * sx / 2), max(1.0, h * sy / 2)
        out.append((max(0, int(round(cx - hw))), max(0, int(round(cy - hh))),
                    min(width, int(round(cx + hw))), min(height, int(round(cy + hh)))))
    return np.asarray(out, dtype=np.int64).reshape(-1, 4)
