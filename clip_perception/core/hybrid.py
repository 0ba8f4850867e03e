"""Hybrid mode: one dense pass proposes, a few crops verify.

1. ``encoder.encode_dense(frame)`` gives every cell an embedding in the joint
   space (see :mod:`.dense_clip` for CLIP).
2. Each cell is scored like a window (:func:`.scoring.target_scores`): the
   softmax against targets, backgrounds and the neutral prompt, with the
   cached text embeddings. That probability map is the published heatmap.
3. Candidate regions per target: connected components of the cells whose
   probability is at least half the map's peak, strongest peak first (the
   peak cell alone when nothing else qualifies).
4. Verification: one crop of each candidate's cells, warped to the encoder's
   square input as R-CNN warps its proposals (Girshick et al. 2014); the
   candidate whose crop has the highest target-vs-neutral evidence is the
   target's hit. The detector's coarse-to-fine refinement then runs around a
   square twice the candidate's size with the crops left in ``verify_crops``.
   Presence is the best crop probability, the box the refined one (the
   candidate's cells when no refinement ran), as in crop mode.

Measured on the known-answer family (see the README): a warped crop of the
cells keeps presence where a square crop of an elongated object is mostly
background, and a square anchor beat one grown with the object's shape.

The dense-feature contract (an optional encoder method):
``encode_dense(image)`` takes ``[1, 3, H, W]`` float RGB in [0, 1] on the
encoder's device and returns ``[h, w, D]`` embeddings in the space of
``encode_images``; cell ``(i, j)`` covers the pixels given by :func:`cell_bounds`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from .scoring import target_scores

if TYPE_CHECKING:
    from .detector import Detection, Detector

Box = tuple[int, int, int, int]
PEAK_FRACTION = 0.5   # cells at >= this share of the peak probability join a candidate
MAX_CANDIDATES = 3    # candidate regions verified per target
CROPS_PER_CANDIDATE = 4  # verify_crops per target per candidate before candidates are cut
ANCHOR_MARGIN = 0.5   # the refinement's anchor: a square this share of the region wider each way


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


def candidates(prob: np.ndarray, count: int) -> list[tuple[slice, slice, float]]:
    """Up to ``count`` connected regions of ``prob`` ``[h, w]``, strongest peak first.

    Each is ``(row slice, column slice, peak)``: the bounding cells of a
    4-connected component of cells at or above :data:`PEAK_FRACTION` x peak.
    """
    peak = float(prob.max())
    mask = (prob >= PEAK_FRACTION * peak).astype(np.uint8) if peak > 0 else None
    if mask is None or not mask.any():
        i, j = np.unravel_index(int(np.argmax(prob)), prob.shape)
        return [(slice(i, i + 1), slice(j, j + 1), peak)]
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    found = []
    for label in range(1, n):
        x, y, w, h = (int(v) for v in stats[label, :4])
        found.append((slice(y, y + h), slice(x, x + w), float(prob[labels == label].max()),
                      float(prob[labels == label].sum())))
    found.sort(key=lambda c: (c[2], c[3]), reverse=True)
    return [c[:3] for c in found[:count]]


def region_box(rows: slice, cols: slice, xs: np.ndarray, ys: np.ndarray) -> Box:
    return int(xs[cols.start]), int(ys[rows.start]), int(xs[cols.stop]), int(ys[rows.stop])


def square_around(box: Box, width: int, height: int, margin: float) -> Box:
    """A square around ``box``, ``margin`` x its long side wider each way, inside the frame."""
    x0, y0, x1, y1 = box
    side = int(round(max(x1 - x0, y1 - y0) * (1 + 2 * margin)))
    side = max(1, min(side, width, height))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + side, top + side


def dense_heatmap(prob: np.ndarray, width: int, height: int, cell: int) -> np.ndarray:
    """The ``[h, w]`` cell map sampled at the centres of ``cell``-pixel heatmap cells."""
    rows, cols = prob.shape
    out_rows, out_cols = -(-height // cell), -(-width // cell)
    cy = np.minimum((np.arange(out_rows) * cell + cell / 2), height - 1)
    cx = np.minimum((np.arange(out_cols) * cell + cell / 2), width - 1)
    i = np.minimum((cy * rows / height).astype(int), rows - 1)
    j = np.minimum((cx * cols / width).astype(int), cols - 1)
    return prob[np.ix_(i, j)].astype(np.float64)


def detect_hybrid(detector: Detector, image: torch.Tensor, targets: tuple[str, ...],
                  classes: torch.Tensor, config, width: int, height: int,
                  with_heatmap: bool) -> Detection:
    """One dense pass, candidate regions, verification crops; a :class:`Detection`."""
    from .detector import Detection, TargetResult

    n = len(targets)
    with torch.inference_mode():
        dense = detector.encoder.encode_dense(image)
        rows, cols, dim = dense.shape
        probs, _ = target_scores(dense.reshape(-1, dim).to(classes.device), classes, n,
                                 detector.logit_scale)
    maps = probs.cpu().numpy().astype(np.float64).reshape(rows, cols, n)
    xs, ys = cell_bounds(rows, cols, width, height)

    per_target = max(1, min(MAX_CANDIDATES, config.verify_crops // (CROPS_PER_CANDIDATE * n)))
    regions: list[list[Box]] = []
    for t in range(n):
        found = candidates(maps[:, :, t], per_target)
        regions.append([region_box(r, c, xs, ys) for r, c, _ in found])
    windows = np.asarray([b for boxes in regions for b in boxes],
                         dtype=np.int64).reshape(-1, 4)
    crop_probs, evidence = detector._score(image, windows, classes, n)
    spent = len(windows)

    starts = np.cumsum([0] + [len(r) for r in regions])
    picks = [int(starts[t] + np.argmax(evidence[starts[t]:starts[t + 1], t])) for t in range(n)]
    hits = [tuple(int(v) for v in windows[p]) for p in picks]
    chosen = [regions[t][picks[t] - starts[t]] for t in range(n)]
    anchors = [square_around(b, width, height, ANCHOR_MARGIN) for b in chosen]
    refined, passes, extra = _verify(detector, image, classes, anchors, width, height,
                                     config.verify_crops - spent, config)
    spent += extra

    results, heatmaps = [], []
    for t, phrase in enumerate(targets):
        scores = crop_probs[:, t]
        score = max([float(scores[starts[t]:starts[t + 1]].max())]
                    + [float(p.probs.max()) for p in passes[t]])
        if with_heatmap:
            heatmaps.append(dense_heatmap(maps[:, :, t], width, height, config.heatmap_stride))
        results.append(TargetResult(
            phrase=phrase,
            present=score >= config.presence_threshold,
            score=score,
            frame_score=float("nan"),
            box=refined[t] or chosen[t],
            best_window=hits[t],
            window_scores=scores,
        ))
    return Detection(results, windows, width, height, spent, heatmaps, config.heatmap_stride,
                     refined=any(passes))


def _verify(detector: Detector, image, classes, hits: list[Box], width: int, height: int,
            budget: int, config):
    """The crop-mode refinement around the verified hits (the one call into the detector's
    box method): final boxes (or None), the fine passes per target, and the crops spent."""
    if not config.refine or budget < 1:
        return [None] * len(hits), [[] for _ in hits], 0
    # The heatmap box: rank_fit needs more windows than a dozen verification crops
    # give (measured on the known-answer family at merge: it failed the hybrid tests).
    return detector._refine(image, classes, hits, width, height, budget,
                            config.refine_stages, config.box_alpha, config.heatmap_stride,
                            method="heatmap")
