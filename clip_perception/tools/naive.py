"""The tutorial pipeline, the benchmark's baseline.

Each window is cut from the frame as a PIL image, preprocessed with CLIP's
own ``preprocess`` (bicubic resize to the short side, centre crop,
normalise) and encoded on its own, one model call per window, with the
result fetched to the host each time. Same encoder, precision and classes as
the package's pipeline, so only the pipeline around the model differs.
:class:`Agreement` checks that both give the same answers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from ..core.detect.scoring import window_scores
from ..core.detect.windows import sliding_indices
from ..core.model import clip_internals

# The pipelines resize differently (PIL bicubic vs roi_align's area-averaged
# bilinear): about 1 grey level on average, a few at edges. Scores differ a
# little, and with random weights all probabilities sit near 1/classes, so the
# best window may be a near-tie that this noise flips.
PROB_TOLERANCE = 0.02  # per square window, absolute target probability
TIE_COSINE = 0.005  # best windows tie if their target logits differ by <= this x logit_scale


def clip_preprocess(size: int) -> Callable[[Image.Image], torch.Tensor]:
    """CLIP's own ``preprocess`` for ``size`` (what ``clip.load`` returns)."""
    return clip_internals.preprocess(size)


@torch.inference_mode()
def naive_scores(encoder, image: np.ndarray, windows: np.ndarray, classes: torch.Tensor,
                 n_targets: int, logit_scale: float,
                 preprocess: Callable[[Image.Image], torch.Tensor],
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Score each window of an ``(H, W, 3)`` RGB frame on its own: (probs, target logits),
    ``[K, T]`` (the logit is ``logit_scale`` x the target's cosine, whose order picks the
    detector's best window).

    ``encoder`` needs ``encode_normalized`` (a
    :class:`~clip_perception.core.model.clip_encoder.ClipEncoder`).
    """
    frame = Image.fromarray(image)
    probs, evidence = [], []
    for box in windows:
        x = preprocess(frame.crop(tuple(int(v) for v in box))).unsqueeze(0).to(encoder.device)
        scores = window_scores(encoder.encode_normalized(x), classes, n_targets, logit_scale)
        probs.append(scores.probs[0])
        evidence.append(logit_scale * scores.cosine[0])
    return np.asarray(probs, np.float64), np.asarray(evidence, np.float64)


def best_sliding_window(windows: np.ndarray, evidence: np.ndarray, width: int,
                        height: int) -> int:
    """Index of the best window by ``evidence`` (the target's logits), the whole frame
    excluded (as the detector does)."""
    candidates = sliding_indices(windows, width, height)
    return int(candidates[np.argmax(evidence[candidates])])


class Agreement:
    """Per-frame comparison of the naive and package window scores."""

    def __init__(self, logit_scale: float):
        self.tie = TIE_COSINE * logit_scale
        self.frames = self.same = self.tied = 0
        self.max_dp = 0.0
        self.full_dp: list[float] = []

    def add(self, windows: np.ndarray, width: int, height: int, package_probs: np.ndarray,
            package_best: tuple[int, ...], naive_probs: np.ndarray,
            naive_evidence: np.ndarray) -> None:
        """One frame: both pipelines' target probabilities per window and best windows."""
        dp = np.abs(package_probs - naive_probs)
        square = (windows[:, 2] - windows[:, 0]) == (windows[:, 3] - windows[:, 1])
        self.max_dp = max(self.max_dp, float(dp[square].max(initial=0.0)))
        self.full_dp += dp[~square].tolist()
        naive_best = best_sliding_window(windows, naive_evidence, width, height)
        package_index = next(i for i, w in enumerate(windows) if tuple(w) == package_best)
        gap = naive_evidence[naive_best] - naive_evidence[package_index]
        self.frames += 1
        self.same += int(naive_best == package_index)
        self.tied += int(naive_best != package_index and gap <= self.tie)

    @property
    def passed(self) -> bool:
        return self.max_dp <= PROB_TOLERANCE and self.same + self.tied == self.frames

    def lines(self) -> list[str]:
        lines = [
            f"agreement: {'PASS' if self.passed else 'FAIL'}",
            f"  best window: same in {self.same}/{self.frames} frames, a tie in {self.tied} "
            f"(naive target-logit gap <= {self.tie:.3f} = {TIE_COSINE} cosine x logit_scale)",
            f"  target probability, square windows: max |diff| = {self.max_dp:.4f} "
            f"(tolerance {PROB_TOLERANCE})",
        ]
        if self.full_dp:
            lines.append(
                f"  non-square windows (the whole frame): max |diff| = {max(self.full_dp):.4f}, "
                "not held to the tolerance: CLIP's preprocess centre-crops them, "
                "the package squashes the whole window")
        return lines
