"""What a detection returns: per-target results for one frame.

Shared by both modes (:mod:`.detector`, :mod:`.hybrid`) and read by the 3D
stage, the runtime loop and the node; imports nothing else of the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Box = tuple[int, int, int, int]


@dataclass
class TargetResult:
    """What was found for one target phrase.

    Attributes:
        phrase: the target phrase.
        present: ``score >= presence_threshold``.
        score: the best target probability over windows and the whole frame.
        frame_score: the whole frame's target probability (nan if not scored).
        box: the region (x0, y0, x1, y1), pixels of the original frame, x1/y1 exclusive.
        best_window: the single best window of the coarse grid.
        window_scores: target probability of every window of :attr:`Detection.windows`.
        second_box: another region, apart from ``box``, that scores present on its own
            (a second instance; ``box`` is the more confident one), or None.
        second_score: that region's target probability (0.0 when there is none).
    """

    phrase: str
    present: bool
    score: float
    frame_score: float
    box: Box
    best_window: Box
    window_scores: np.ndarray = field(repr=False)
    second_box: Box | None = None
    second_score: float = 0.0


@dataclass
class Detection:
    """The result for one frame: per-target results and what was computed."""

    targets: list[TargetResult]
    windows: np.ndarray = field(repr=False)
    width: int = 0
    height: int = 0
    crops: int = 0
    heatmaps: list[np.ndarray] = field(default_factory=list, repr=False)
    heatmap_cell: int = 1
    refined: bool = False  # a finer pass ran (False when the coarse grid used the budget)
    dense_passes: int = 0  # hybrid: encode_dense calls (the frame's, plus one per zoom)
    # unit embeddings of box_embeddings.tracked_boxes(self), when the detector computed
    # them with the detection (a server-side detector), else None: tracking embeds them
    box_embeddings: np.ndarray | None = field(default=None, repr=False)

    @property
    def present(self) -> bool:
        """True when every target was found."""
        return bool(self.targets) and all(t.present for t in self.targets)


def second_instance(boxes: np.ndarray, probs: np.ndarray, box: Box, threshold: float,
                    order: np.ndarray | None = None) -> tuple[Box, float] | None:
    """The most probable of ``boxes`` that does not overlap ``box`` and scores at least
    ``threshold`` on its own (a second instance of the target), with its probability.

    ``order`` (e.g. the target's logit margin) ranks the candidates instead of
    ``probs``, which tie at 1.0 once the margin is large."""
    x0, y0, x1, y1 = box
    apart = ((boxes[:, 2] <= x0) | (boxes[:, 0] >= x1)
             | (boxes[:, 3] <= y0) | (boxes[:, 1] >= y1)) & (probs >= threshold)
    if not apart.any():
        return None
    key = probs if order is None else order
    best = np.flatnonzero(apart)[np.argmax(key[apart])]
    return tuple(int(v) for v in boxes[best]), float(probs[best])
