"""The tutorial pipeline, the benchmark's baseline.

Each window is cut from the frame as a PIL image, preprocessed with CLIP's
own ``preprocess`` (bicubic resize to the short side, centre crop,
normalise) and encoded on its own, one model call per window, with the
result fetched to the host each time. Same encoder, precision and classes as
the package's pipeline, so only the pipeline around the model differs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from .scoring import target_scores


def clip_preprocess(size: int) -> Callable[[Image.Image], torch.Tensor]:
    """CLIP's own ``preprocess`` for ``size`` (what ``clip.load`` returns)."""
    from clip.clip import _transform

    return _transform(size)


@torch.inference_mode()
def naive_scores(encoder, image: np.ndarray, windows: np.ndarray, classes: torch.Tensor,
                 n_targets: int, logit_scale: float,
                 preprocess: Callable[[Image.Image], torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Score each window of an ``(H, W, 3)`` RGB frame on its own: (probs, evidence), ``[K, T]``.

    ``encoder`` needs ``encode_normalized`` (a :class:`~clip_perception.encoders.ClipEncoder`).
    """
    frame = Image.fromarray(image)
    probs, evidence = [], []
    for box in windows:
        x = preprocess(frame.crop(tuple(int(v) for v in box))).unsqueeze(0).to(encoder.device)
        p, e = target_scores(encoder.encode_normalized(x), classes, n_targets, logit_scale)
        probs.append(p[0].cpu().numpy())
        evidence.append(e[0].cpu().numpy())
    return np.asarray(probs, np.float64), np.asarray(evidence, np.float64)


def best_sliding_window(windows: np.ndarray, evidence: np.ndarray, width: int,
                        height: int) -> int:
    """Index of the best window by evidence, the whole frame excluded (as the detector does)."""
    full = ((windows[:, 0] == 0) & (windows[:, 1] == 0)
            & (windows[:, 2] == width) & (windows[:, 3] == height))
    candidates = np.flatnonzero(~full) if (~full).any() else np.arange(len(windows))
    return int(candidates[np.argmax(evidence[candidates])])
