"""Per-track appearance memory: an averaged embedding and how well matches agree with it.

Cosines of one encoder sit in a band of their own (CLIP's are all near 0.9,
a colour histogram's spread over 0..1), so a raw cosine threshold would
suit one encoder and not another. A track instead keeps the cosine
*distances* (1 - cos) of its own past matches, and a new box is judged by
its distance relative to the typical one: :meth:`AppearanceMemory.ratio`.
An encoder that sees the same object identically from frame to frame (a
typical distance near zero) would make every small difference an outlier, so
the scale has a floor from a competitor every frame has: the whole frame.
:data:`REFERENCE_SHARE` of the track's distance to the frame it was found in
is "a small difference" for that encoder, whatever its cosine band.
"""

from __future__ import annotations

import numpy as np

EMA = 0.3             # weight of a new match in the stored embedding
HISTORY = 20          # past match distances kept
MIN_HISTORY = 3       # matches before the ratio is trusted
REFERENCE_SHARE = 0.1  # of the distance to the whole frame: the smallest unusual distance


class AppearanceMemory:
    """The stored embedding of one track and its match-distance history."""

    def __init__(self, embedding: np.ndarray | None):
        self.embedding = None if embedding is None else _unit(embedding)
        self.distances: list[float] = []
        self.reference: float | None = None  # distance to the frames it was found in

    def distance(self, embedding: np.ndarray | None) -> float | None:
        """1 - cosine of ``embedding`` to the stored one (None if either is missing)."""
        if embedding is None or self.embedding is None:
            return None
        return float(1.0 - np.dot(self.embedding, _unit(embedding)))

    def typical(self) -> float | None:
        """The median distance of past matches (None until :data:`MIN_HISTORY`)."""
        if len(self.distances) < MIN_HISTORY:
            return None
        return float(np.median(self.distances))

    def ratio(self, embedding: np.ndarray | None) -> float:
        """The distance of ``embedding`` over the typical one (1.0: as similar as the track's
        own matches; large: unlike it). 1.0 when nothing is known yet."""
        d, typical = self.distance(embedding), self.typical()
        if d is None or typical is None:
            return 1.0
        spread = float(np.median(np.abs(np.asarray(self.distances) - typical)))
        # a floor relative to the typical distance: an encoder whose matches are all alike
        # does not make every small difference an outlier
        floor = REFERENCE_SHARE * self.reference if self.reference is not None else 0.0
        scale = max(typical + 3.0 * 1.4826 * spread, floor, 1e-9)
        return max(d, 0.0) / scale

    def update(self, embedding: np.ndarray | None, context: np.ndarray | None = None) -> None:
        """Add a matched box's embedding (and that of the whole frame it was found in)."""
        if embedding is None:
            return
        e = _unit(embedding)
        if context is not None:
            d = float(1.0 - np.dot(e, _unit(context)))
            self.reference = d if self.reference is None else (
                (1 - EMA) * self.reference + EMA * d)
        if self.embedding is None:
            self.embedding = e
            return
        self.distances.append(float(1.0 - np.dot(self.embedding, e)))
        del self.distances[:-HISTORY]
        self.embedding = _unit((1 - EMA) * self.embedding + EMA * e)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
