"""From window probabilities to a tight box.

* :func:`heatmap` averages window probabilities per cell, normalised by how
  many windows cover the cell (as CLIP-DIY does).
* :func:`best_box` searches the box that maximises the heatmap mass inside
  it minus ``alpha`` x its area (Li et al. 2022): cells above ``alpha`` pull
  the box out, cells below push it in.
* :func:`refine_windows` places a finer window grid around a coarse hit
  (coarse to fine), within a crop budget.
"""

from __future__ import annotations

import math

import numpy as np

from .windows import grid


def heatmap(boxes: np.ndarray, scores: np.ndarray, width: int, height: int,
            cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage-normalised mean score per ``cell`` x ``cell`` block.

    Returns ``(heat, coverage)``, both ``(ceil(H/cell), ceil(W/cell))``;
    cells no window covers are 0 with coverage 0.
    """
    rows, cols = math.ceil(height / cell), math.ceil(width / cell)
    total = np.zeros((rows + 1, cols + 1))
    count = np.zeros((rows + 1, cols + 1))
    if len(boxes):
        b = np.asarray(boxes, dtype=np.float64) / cell
        x0 = np.clip(np.floor(b[:, 0] + 0.5), 0, cols).astype(int)
        y0 = np.clip(np.floor(b[:, 1] + 0.5), 0, rows).astype(int)
        x1 = np.clip(np.floor(b[:, 2] + 0.5), 0, cols).astype(int)
        y1 = np.clip(np.floor(b[:, 3] + 0.5), 0, rows).astype(int)
        x1 = np.maximum(x1, np.minimum(x0 + 1, cols))
        y1 = np.maximum(y1, np.minimum(y0 + 1, rows))
        s = np.asarray(scores, dtype=np.float64)
        for grid_, v in ((total, s), (count, np.ones_like(s))):
            np.add.at(grid_, (y0, x0), v)
            np.add.at(grid_, (y0, x1), -v)
            np.add.at(grid_, (y1, x0), -v)
            np.add.at(grid_, (y1, x1), v)
    total = total.cumsum(0).cumsum(1)[:rows, :cols]
    count = np.rint(count.cumsum(0).cumsum(1)[:rows, :cols])
    heat = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return heat, count


def max_sum_rectangle(values: np.ndarray) -> tuple[tuple[int, int, int, int], float]:
    """The sub-rectangle of ``values`` with the largest sum (2-D Kadane, vectorised).

    Returns ``((c0, r0, c1, r1), total)`` with exclusive ends; an all-negative
    array gives its single largest cell.
    """
    rows, cols = values.shape
    prefix = np.vstack([np.zeros((1, cols)), values.cumsum(0)])
    top, bottom = np.triu_indices(rows + 1, k=1)
    strips = prefix[bottom] - prefix[top]  # [pairs, cols]: column sums of rows top..bottom-1
    run = np.hstack([np.zeros((len(strips), 1)), strips.cumsum(1)])
    lowest = np.minimum.accumulate(run[:, :-1], axis=1)
    gains = run[:, 1:] - lowest  # best sum of a run ending at each column
    pair, end = np.unravel_index(int(np.argmax(gains)), gains.shape)
    start = int(np.argmax(run[pair, : end + 1] == lowest[pair, end]))
    return (start, int(top[pair]), int(end) + 1, int(bottom[pair])), float(gains[pair, end])


def best_box(heat: np.ndarray, coverage: np.ndarray, alpha: float, cell: int,
             width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pixel box maximising ``sum(heat - alpha)`` over covered cells, or None if no cell
    exceeds ``alpha``."""
    gain = np.where(coverage > 0, heat - alpha, -1.0)
    if not (gain > 0).any():
        return None
    (c0, r0, c1, r1), _ = max_sum_rectangle(gain)
    return (c0 * cell, r0 * cell, min(c1 * cell, width), min(r1 * cell, height))


def refine_windows(box: tuple[int, int, int, int], width: int, height: int, budget: int,
                   side_fraction: float = 0.5, min_side: int = 16,
                   strides: tuple[float, ...] = (0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.75, 1.0),
                   min_pad: int = 0) -> np.ndarray:
    """A finer grid around ``box`` with at most ``budget`` windows.

    Windows are ``side_fraction`` of the box's short side and cover the box
    grown by half a window (at least ``min_pad`` pixels) on each side, so an
    object straddling the box's edge is still covered. The densest stride that
    fits the budget is used.
    """
    if budget < 1:
        return np.zeros((0, 4), dtype=np.int64)
    x0, y0, x1, y1 = box
    side = max(min_side, int(round(min(x1 - x0, y1 - y0) * side_fraction)))
    pad = max(side // 2, int(min_pad))
    region = (max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad), min(height, y1 + pad))
    for stride in strides:
        boxes = grid(region, side, stride)
        if len(boxes) <= budget:
            return boxes
    # Even the sparsest grid is over budget: larger windows, so that the grid still
    # covers the whole region (cutting the list would cover only its top rows).
    short = min(region[2] - region[0], region[3] - region[1])
    while len(boxes) > budget and side < short:
        side = min(short, math.ceil(side * 1.25))
        boxes = grid(region, side, 1.0)
    if len(boxes) > budget:  # a long thin region: spread the windows along it
        boxes = boxes[((np.arange(budget) + 0.5) * len(boxes) / budget).astype(int)]
    return boxes


# --- a box from the ordering of window scores (independent of the response curve) ----
def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-D array, tied values sharing their mean rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def _pairs(edges: np.ndarray, min_side: float) -> np.ndarray:
    """All (start, end) pairs of ``edges`` with ``end - start >= min_side``, ``[P, 2]``."""
    i, j = np.triu_indices(len(edges), k=1)
    pairs = np.stack([edges[i], edges[j]], axis=1)
    return pairs[pairs[:, 1] - pairs[:, 0] >= min_side]


def _overlap(starts: np.ndarray, ends: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Overlap length of each window interval with each candidate interval, ``[K, P]``."""
    low = np.maximum(starts[:, None], pairs[None, :, 0])
    high = np.minimum(ends[:, None], pairs[None, :, 1])
    return np.clip(high - low, 0.0, None)


def _best_in(windows: np.ndarray, target: np.ndarray, xpairs: np.ndarray,
             ypairs: np.ndarray) -> tuple[np.ndarray, float]:
    """The candidate box (x pair x y pair) whose window shares correlate best with
    ``target`` (centred, unit-norm ranks of the window scores)."""
    area = np.maximum((windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1]), 1.0)
    ox = _overlap(windows[:, 0], windows[:, 2], xpairs) / np.sqrt(area)[:, None]  # K Px
    oy = _overlap(windows[:, 1], windows[:, 3], ypairs) / np.sqrt(area)[:, None]  # K Py
    # share[k, a, b] = ox[k, a] * oy[k, b]; correlation with target over k, vectorised
    dot = np.einsum("k,ka,kb->ab", target, ox, oy)
    mean = np.einsum("ka,kb->ab", ox, oy) / len(target)
    sq = np.einsum("ka,kb->ab", ox * ox, oy * oy)
    var = np.maximum(sq - len(target) * mean * mean, 1e-12)
    corr = dot / np.sqrt(var)  # target is centred and unit-norm
    a, b = np.unravel_index(int(np.argmax(corr)), corr.shape)
    box = np.array([xpairs[a, 0], ypairs[b, 0], xpairs[a, 1], ypairs[b, 1]])
    return box, float(corr[a, b])


def rank_fit_box(windows: np.ndarray, scores: np.ndarray, region: tuple[int, int, int, int],
                 min_side: int = 8, steps: int = 16, polish: bool = True,
                 rank_power: float = 1.0) -> tuple[tuple[int, int, int, int], float]:
    """The box inside ``region`` that best explains the ORDER of the window scores.

    For a candidate box B, each window's share is the fraction of the window
    that B covers. Any encoder whose score rises with the share of the window
    the object fills ranks windows by that share, whatever its response curve
    (linear, saturating, offset); so the box is the one whose shares correlate
    best (Pearson) with the ranks of the scores. Only the ranks of the scores
    are used, so a monotone change of the scores (a softmax, a temperature, a
    constant background similarity) gives the same box. A coarse search over
    ``steps`` edge positions per axis is refined to a quarter of that step.

    ``rank_power`` > 1 fits to the ranks (scaled to [0, 1]) raised to that
    power: the order of the top windows, which hold the object, then weighs
    more than the order among the many windows that hold none of it, which
    under feature noise is noise. Boxes come out tighter, so it suits a box
    that only places the next, finer stage.

    Returns ``(box, correlation)``; the box is in pixels, x1/y1 exclusive.
    """
    windows = np.asarray(windows, dtype=np.float64)
    ranks = average_ranks(scores)
    if rank_power != 1.0:
        ranks = (ranks / max(len(ranks) - 1, 1)) ** rank_power
    target = ranks - ranks.mean()
    norm = np.linalg.norm(target)
    x0, y0, x1, y1 = (float(v) for v in region)
    if norm == 0 or x1 - x0 < min_side or y1 - y0 < min_side:
        return tuple(int(v) for v in region), 0.0
    target /= norm
    xs, ys = np.linspace(x0, x1, steps + 1), np.linspace(y0, y1, steps + 1)
    box, corr = _best_in(windows, target, _pairs(xs, min_side), _pairs(ys, min_side))
    step_x, step_y = (x1 - x0) / steps, (y1 - y0) / steps
    for sx, sy in ((step_x, step_y), (step_x / 4, step_y / 4)):
        offsets = np.linspace(-1.0, 1.0, 9)
        xa = np.clip(box[0] + offsets * sx, x0, x1)
        xb = np.clip(box[2] + offsets * sx, x0, x1)
        ya = np.clip(box[1] + offsets * sy, y0, y1)
        yb = np.clip(box[3] + offsets * sy, y0, y1)
        xpairs = np.stack(np.meshgrid(xa, xb, indexing="ij"), -1).reshape(-1, 2)
        ypairs = np.stack(np.meshgrid(ya, yb, indexing="ij"), -1).reshape(-1, 2)
        xpairs = xpairs[xpairs[:, 1] - xpairs[:, 0] >= min_side]
        ypairs = ypairs[ypairs[:, 1] - ypairs[:, 0] >= min_side]
        if len(xpairs) and len(ypairs):
            cand, c = _best_in(windows, target, xpairs, ypairs)
            if c > corr:
                box, corr = cand, c
    if polish:
        box, corr = spearman_polish(windows, target, box, (x0, y0, x1, y1), min_side)
    x0i, y0i, x1i, y1i = (int(round(v)) for v in box)
    return (x0i, y0i, x1i, y1i), corr


def row_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean) along each row of a ``[C, K]`` array of
    values in [0, 1]."""
    c, k = values.shape
    offset = values + 2.0 * np.arange(c)[:, None]  # rows never mix
    flat = offset.ravel()
    ordered = np.sort(flat)
    low = np.searchsorted(ordered, flat, "left")
    high = np.searchsorted(ordered, flat, "right")
    return ((low + high - 1) / 2.0).reshape(c, k) - (k * np.arange(c))[:, None]


def _spearman(windows: np.ndarray, target: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Rank correlation of each candidate box's window shares with ``target`` (centred,
    unit-norm score ranks), ``[C]``; -inf where a box gives every window the same share."""
    area = np.maximum((windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1]), 1.0)
    ox = np.clip(np.minimum(windows[None, :, 2], boxes[:, None, 2])
                 - np.maximum(windows[None, :, 0], boxes[:, None, 0]), 0.0, None)
    oy = np.clip(np.minimum(windows[None, :, 3], boxes[:, None, 3])
                 - np.maximum(windows[None, :, 1], boxes[:, None, 1]), 0.0, None)
    ranks = row_ranks(ox * oy / area[None, :])
    ranks -= ranks.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(ranks, axis=1)
    corr = ranks @ target / np.where(norm > 0, norm, 1.0)
    return np.where(norm > 0, corr, -np.inf)


def spearman_polish(windows: np.ndarray, target: np.ndarray, box: np.ndarray,
                    region: tuple[float, float, float, float], min_side: float,
                    steps: tuple[float, ...] = (0.2, 0.08, 0.03), passes: int = 2,
                    ) -> tuple[np.ndarray, float]:
    """Move each edge of ``box`` to where the RANKS of the window shares best match the
    ranks of the scores (Spearman), coordinate by coordinate.

    The Pearson fit correlates shares themselves with score ranks; ranks stretch
    the many small shares, which favours boxes larger than the object. Ranking the
    shares too makes any monotone response fit perfectly at the true box. On a
    plateau of equal correlation the edge takes the plateau's middle.
    """
    box = np.asarray(box, dtype=np.float64).copy()
    lo = np.array([region[0], region[1], region[0], region[1]], dtype=np.float64)
    hi = np.array([region[2], region[3], region[2], region[3]], dtype=np.float64)
    best = float(_spearman(windows, target, box[None])[0])
    offsets = np.linspace(-1.0, 1.0, 11)
    for step in steps:
        for _ in range(passes):
            for edge in range(4):
                side = box[2] - box[0] if edge in (0, 2) else box[3] - box[1]
                values = np.clip(box[edge] + offsets * step * max(side, min_side),
                                 lo[edge], hi[edge])
                cands = np.repeat(box[None], len(values), axis=0)
                cands[:, edge] = values
                ok = ((cands[:, 2] - cands[:, 0] >= min_side)
                      & (cands[:, 3] - cands[:, 1] >= min_side))
                if not ok.any():
                    continue
                cands, values = cands[ok], values[ok]
                corr = _spearman(windows, target, cands)
                top = corr.max()
                if top < best - 1e-12:
                    continue
                tied = np.flatnonzero(corr >= top - 1e-12)
                box[edge] = values[tied[len(tied) // 2]]
                best = float(top)
    return box, best
