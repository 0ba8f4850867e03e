"""Hybrid mode: one dense pass proposes, a few crops verify.

1. ``encoder.encode_dense(frame)`` gives every cell an embedding in the joint
   space (see :mod:`.dense_clip` for CLIP).
2. Each cell is scored against the targets, the background prompts and the
   neutral prompt with the cached text embeddings: the softmax probability
   (the published heatmap) and the logit margin, the target's logit minus the
   best background or neutral logit (:func:`.dense_regions.margin_map`).
3. Candidate regions per target: connected groups of cells of high margin,
   strongest first (:func:`.dense_regions.regions`). Each gets its box from
   the cells alone: the box that best explains the order of the cells'
   margins (:func:`.dense_regions.fit_cells`), which puts each edge inside
   the cells the object's edge cuts, whatever the encoder's response curve.
   A cell lies on the object or not, so this map does not saturate the way a
   window's score does.
4. Verification: one crop of each candidate's box, warped to the encoder's
   square input as R-CNN warps its proposals (Girshick et al. 2014); the
   candidate whose crop has the highest target-vs-neutral evidence is the
   target's. Then :data:`PRESENCE_SCALES` crops of that box shrunk about its
   centre, so that a box a little larger than the object (coarse cells)
   still has a crop the object fills. Presence is the best crop probability,
   the box the chosen candidate's.

Measured on the known-answer family (docs/localization.md, "Hybrid mode"): the cell-fitted
box beat the candidate's bounding cells, and crops spent on moving the box
(a rank fit over a dozen crops, with or without the cells) made it worse, so
the crops decide presence and which candidate, not where the edges are.

The dense-feature contract (an optional encoder method):
``encode_dense(image)`` takes ``[1, 3, H, W]`` float RGB in [0, 1] on the
encoder's device and returns ``[h, w, D]`` embeddings in the space of
``encode_images``; cell ``(i, j)`` covers the pixels given by :func:`cell_bounds`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .dense_regions import fit_cells, margin_map, regions, scaled_boxes
from .results import Box, Detection, TargetResult, second_instance
from .windows import box_intersection

# (image, boxes [K, 4], classes, n_targets) -> (probs [K, T], evidence [K, T], ...): the
# detector's crop scoring (a WindowScores), one roi_align and one encoder pass
Score = Callable[[torch.Tensor, np.ndarray, torch.Tensor, int], tuple[np.ndarray, ...]]
MAX_CANDIDATES = 3    # candidate regions verified per target
CROPS_PER_CANDIDATE = 4  # verify_crops per target per candidate before candidates are cut
PRESENCE_SCALES = ((0.7, 0.7), (0.5, 0.5))  # the chosen box shrunk: presence crops
ZOOM_BELOW = 4        # a box fewer cells than this across gets a second, zoomed dense pass
ZOOM_MARGIN = 0.5     # the zoomed region: the box grown this share of its side (>= 1 cell) a side


def supports_dense(encoder) -> bool:
    """True when the encoder offers ``encode_dense``."""
    return callable(getattr(encoder, "encode_dense", None))


def cell_bounds(rows: int, cols: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel edges of a ``rows`` x ``cols`` grid over a ``width`` x ``height`` frame.

    Returns ``(xs, ys)`` of lengths ``cols + 1`` and ``rows + 1``: cell ``(i, j)``
    covers ``[xs[j], xs[j+1]) x [ys[i], ys[i+1])``, H and W divided evenly
    (rounded down to whole pixels).
    """
    xs = (np.arange(cols + 1) * width) // cols
    ys = (np.arange(rows + 1) * height) // rows
    return xs.astype(np.int64), ys.astype(np.int64)


def dense_heatmap(prob: np.ndarray, width: int, height: int, cell: int) -> np.ndarray:
    """The ``[h, w]`` cell map sampled at the centres of ``cell``-pixel heatmap cells."""
    rows, cols = prob.shape
    out_rows, out_cols = -(-height // cell), -(-width // cell)
    cy = np.minimum((np.arange(out_rows) * cell + cell / 2), height - 1)
    cx = np.minimum((np.arange(out_cols) * cell + cell / 2), width - 1)
    i = np.minimum((cy * rows / height).astype(int), rows - 1)
    j = np.minimum((cx * cols / width).astype(int), cols - 1)
    return prob[np.ix_(i, j)].astype(np.float64)


def cell_logits(logit_scale: float, dense: torch.Tensor, classes: torch.Tensor
                ) -> torch.Tensor:
    """``[h, w, D]`` cell embeddings -> ``[h * w, classes]`` logits (row-major cells)."""
    cells = F.normalize(dense.reshape(-1, dense.shape[-1]).to(classes.device).float(), dim=-1)
    return logit_scale * cells @ classes.float().T


def needs_zoom(box: Box, cell: tuple[float, float], below: int = ZOOM_BELOW) -> bool:
    """True if ``box`` spans fewer than ``below`` cells of ``cell`` pixels on a side."""
    return min((box[2] - box[0]) / cell[0], (box[3] - box[1]) / cell[1]) < below


def zoom_region(box: Box, cell: tuple[float, float], width: int, height: int,
                margin: float = ZOOM_MARGIN) -> Box:
    """``box`` grown by ``margin`` x its side (at least one cell) each way, inside the frame."""
    x0, y0, x1, y1 = box
    gx = max(cell[0], margin * (x1 - x0))
    gy = max(cell[1], margin * (y1 - y0))
    return (max(0, int(x0 - gx)), max(0, int(y0 - gy)),
            min(width, int(np.ceil(x1 + gx))), min(height, int(np.ceil(y1 + gy))))


def zoom_fit(encoder, logit_scale: float, image: torch.Tensor, classes: torch.Tensor, t: int,
             n: int, box: Box, cell: tuple[float, float], width: int, height: int) -> Box:
    """``box`` refitted on a second dense pass over the region around it.

    The region is cut from the uploaded frame and scaled up to the frame's long
    side, so the encoder's cells cover fewer frame pixels there; the new map's
    region that overlaps ``box`` most (the strongest on a tie) is fitted the same
    way as the first, its level set from the cells outside ``box`` (the object
    fills much of the zoomed region, so the map's median would sit on it).
    ``box`` stays if the zoomed map has no such region.
    """
    rx0, ry0, rx1, ry1 = zoom_region(box, cell, width, height)
    rw, rh = rx1 - rx0, ry1 - ry0
    scale = max(width, height) / max(rw, rh)
    zw, zh = max(1, int(round(rw * scale))), max(1, int(round(rh * scale)))
    with torch.inference_mode():
        crop = image[:, :, ry0:ry1, rx0:rx1]
        zoomed = F.interpolate(crop.float(), size=(zh, zw), mode="bilinear",
                               align_corners=False).clamp_(0, 1).to(image.dtype)
        dense = encoder.encode_dense(zoomed)
        rows, cols, _ = dense.shape
        logits = cell_logits(logit_scale, dense, classes)
    margin = margin_map(logits.cpu().numpy().astype(np.float64), n)[:, t].reshape(rows, cols)
    xs, ys = cell_bounds(rows, cols, rw, rh)
    inner = (box[0] - rx0, box[1] - ry0, box[2] - rx0, box[3] - ry0)
    best, best_key = None, None
    for r, c, peak in regions(margin, MAX_CANDIDATES, floor=outside_median(margin, xs, ys,
                                                                            inner)):
        fitted = fit_cells(margin, r, c, xs, ys)
        key = (box_intersection(fitted, inner), peak)
        if best_key is None or key > best_key:
            best, best_key = fitted, key
    if best is None or best_key[0] <= 0:
        return box
    return best[0] + rx0, best[1] + ry0, best[2] + rx0, best[3] + ry0


def outside_median(margin: np.ndarray, xs: np.ndarray, ys: np.ndarray, box: Box
                   ) -> float | None:
    """The median margin of the cells whose centres lie outside ``box``: the zoomed
    region's background level, which the object (a large share of that region) would
    raise if the whole map's median were taken. None when no cell lies outside."""
    cx, cy = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    inside = ((cy[:, None] >= box[1]) & (cy[:, None] < box[3])
              & (cx[None, :] >= box[0]) & (cx[None, :] < box[2]))
    return float(np.median(margin[~inside])) if (~inside).any() else None


def detect_hybrid(encoder, logit_scale: float, score: Score, image: torch.Tensor,
                  targets: tuple[str, ...], classes: torch.Tensor, config, width: int,
                  height: int, with_heatmap: bool) -> Detection:
    """One dense pass of ``encoder``, candidate regions, verification crops scored by
    ``score``; a :class:`~.results.Detection`.

    Crops: up to :data:`MAX_CANDIDATES` per target (fewer when ``verify_crops``
    is small; at least one), then the presence crops while ``verify_crops`` lasts.
    """
    n = len(targets)
    with torch.inference_mode():
        dense = encoder.encode_dense(image)
        rows, cols, _ = dense.shape
        logits = cell_logits(logit_scale, dense, classes)
        probs = logits.softmax(dim=-1)[:, :n]
    maps = probs.cpu().numpy().astype(np.float64).reshape(rows, cols, n)
    margins = margin_map(logits.cpu().numpy().astype(np.float64), n).reshape(rows, cols, n)
    xs, ys = cell_bounds(rows, cols, width, height)

    per_target = max(1, min(MAX_CANDIDATES, config.verify_crops // (CROPS_PER_CANDIDATE * n)))
    boxes = [[fit_cells(margins[:, :, t], r, c, xs, ys) for r, c, _ in
              regions(margins[:, :, t], per_target)] for t in range(n)]
    windows = np.asarray([b for bt in boxes for b in bt], dtype=np.int64).reshape(-1, 4)
    crop_probs, evidence = score(image, windows, classes, n)[:2]
    spent = len(windows)
    starts = np.cumsum([0] + [len(b) for b in boxes])
    picks = [int(np.argmax(evidence[starts[t]:starts[t + 1], t])) for t in range(n)]
    chosen = [boxes[t][picks[t]] for t in range(n)]
    scores = [float(crop_probs[starts[t]:starts[t + 1], t].max()) for t in range(n)]
    cell = (width / cols, height / rows)
    zoomed = [config.hybrid_zoom and needs_zoom(box, cell) for box in chosen]
    chosen = [zoom_fit(encoder, logit_scale, image, classes, t, n, box, cell, width, height)
              if zoom
              else box for t, (box, zoom) in enumerate(zip(chosen, zoomed))]

    extra = min(len(PRESENCE_SCALES), (config.verify_crops - spent) // n)
    if extra > 0:
        shrunk = np.concatenate([scaled_boxes(b, PRESENCE_SCALES[:extra], width, height)
                                 for b in chosen])
        more = score(image, shrunk, classes, n)[0]
        spent += len(shrunk)
        scores = [max(scores[t], float(more[t * extra:(t + 1) * extra, t].max()))
                  for t in range(n)]

    results, heatmaps = [], []
    for t, phrase in enumerate(targets):
        mine = slice(starts[t], starts[t + 1])
        second = (second_instance(windows[mine], crop_probs[mine, t], chosen[t],
                                  config.presence_threshold)
                  if scores[t] >= config.presence_threshold else None)
        if with_heatmap:
            heatmaps.append(dense_heatmap(maps[:, :, t], width, height, config.heatmap_stride))
        results.append(TargetResult(
            phrase=phrase,
            present=scores[t] >= config.presence_threshold,
            score=scores[t],
            frame_score=float("nan"),
            box=chosen[t],
            best_window=chosen[t],
            window_scores=crop_probs[:, t],
            second_box=second[0] if second else None,
            second_score=second[1] if second else 0.0,
        ))
    return Detection(results, windows, width, height, spent, heatmaps, config.heatmap_stride,
                     dense_passes=1 + sum(zoomed))
