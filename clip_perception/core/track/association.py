"""Gated assignment of detections to tracks: cost matrices and an exact solver.

Geometry is normalised by the track's box size (scale-free in pixels), the
gate widens with the time since the track was last seen, and appearance
enters relative to the track's own history of match cosines (see
:mod:`.appearance`), so nothing depends on the scale of one encoder's numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

INFEASIBLE = 1e6
Box = tuple[float, float, float, float]


def centre_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Distance of the boxes' centres in units of ``a``'s size (sqrt of its area)."""
    size = max(np.sqrt(max((a[2] - a[0]) * (a[3] - a[1]), 1.0)), 1.0)
    return float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
                 / size)


def size_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """How much the boxes' widths or heights differ, as a ratio >= 1."""
    ratios = []
    for i, j in ((0, 2), (1, 3)):
        wa, wb = max(a[j] - a[i], 1.0), max(b[j] - b[i], 1.0)
        ratios.append(max(wa / wb, wb / wa))
    return float(max(ratios))


def solve(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost assignment of rows to columns (Hungarian algorithm, rectangular);
    pairs whose cost is :data:`INFEASIBLE` or more are left out."""
    cost = np.asarray(cost, dtype=np.float64)
    rows, cols = cost.shape
    if rows == 0 or cols == 0:
        return []
    transposed = rows > cols
    c = cost.T if transposed else cost
    n, m = c.shape  # n <= m
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=int)  # p[j]: row (1-based) assigned to column j
    way = np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = c[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    pairs = [(p[j] - 1, j - 1) for j in range(1, m + 1) if p[j]]
    if transposed:
        pairs = [(col, row) for row, col in pairs]
    return sorted((r, c_) for r, c_ in pairs if cost[r, c_] < INFEASIBLE)
