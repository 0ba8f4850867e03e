"""Localization in a space that cannot saturate.

An encoder whose target beats every other class by 20 to 60 logits gives
window probabilities that round to exactly 1.0, so a box fitted to their order
has nothing to go on. The box is fitted to the order of the target's cosine
instead: it must be the same under any strictly increasing transform of the
encoder's cosines, at margins up to 60 logits.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from clip_perception.core.detect.config import DetectorConfig
from clip_perception.core.detect.detector import Detector
from clip_perception.core.detect.scoring import window_scores
from clip_perception.core.detect.windows import box_iou
from clip_perception.testing import known_answer
from clip_perception.testing.scenes import hard_scene_set

WARPS = {  # strictly increasing on [-1, 1], |warp(x)| <= |x|
    "cube": lambda x: x**3,
    "scaled": lambda x: 0.25 * x,
    "odd_mix": lambda x: 0.5 * x + 0.5 * x * x.abs(),
}


@functools.lru_cache(maxsize=1)
def scenes() -> tuple:
    """Scenes with the target, whole and uncut, 60 px and more (made once)."""
    return tuple(s for s in hard_scene_set(10, seed=3, absent_fraction=0.0, cut_fraction=0.0,
                                           size_range=(60, 200))[:4])


@functools.cache
def boxes(member: str, warp: str | None) -> tuple:
    """Box and best window per scene for ``member``, its cosines warped by ``warp``."""
    encoder = (known_answer.load(member) if warp is None
               else known_answer.transformed(member, WARPS[warp]))
    detector = Detector(encoder, DetectorConfig())
    out = []
    for scene in scenes():
        found = detector.detect(scene.image, [scene.target]).targets[0]
        out.append((found.box, found.best_window, found.present))
    return tuple(out)


def test_window_scores_keep_the_order_that_probabilities_lose() -> None:
    texts = torch.eye(4, dtype=torch.float32)  # target, two backgrounds, neutral
    images = torch.tensor([[1.0, 0.3, 0.0, 0.0], [1.0, 0.2, 0.0, 0.0], [1.0, 0.1, 0.0, 0.0]])
    images = images * 7.0  # not unit-norm: the pipeline normalises
    scores = window_scores(images, texts, 1, 100.0)
    assert scores.probs.dtype == np.float64
    assert (scores.probs[:, 0] > 0.99).all()
    # float32 probabilities of the three windows tie; margins and cosines do not
    assert len(set(torch.from_numpy(scores.probs[:, 0]).float().tolist())) == 1
    assert np.all(np.diff(scores.margin[:, 0]) > 0) and np.all(np.diff(scores.cosine[:, 0]) > 0)
    logits = 100.0 * torch.nn.functional.normalize(images.double(), dim=-1) @ texts.double().T
    np.testing.assert_allclose(scores.probs, logits.softmax(-1)[:, :1].numpy(), rtol=1e-12)
    expected = logits[:, 0] - torch.logsumexp(logits[:, 1:], dim=-1)
    np.testing.assert_allclose(scores.margin[:, 0], expected.numpy(), rtol=1e-12)


def test_sharp_member_saturates_the_probabilities_but_not_the_cosines() -> None:
    """The premise: on ``sharp`` windows three quarters or more on the object all have
    probability 1.0 exactly (about 50 to 65 logits of margin); their cosines differ."""
    encoder = known_answer.load("sharp")
    config = DetectorConfig()
    classes = torch.nn.functional.normalize(encoder.encode_texts(
        ["a photo of a red.", *config.background_prompts, config.neutral_prompt]), dim=-1)
    shares = torch.tensor([0.8, 0.9, 1.0])
    fractions = torch.zeros(3, encoder.colours + 1)
    fractions[:, 0], fractions[:, -1] = shares, 1.0 - shares
    scores = window_scores(encoder.embed(fractions, torch.zeros(3, 3)), classes, 1,
                           encoder.logit_scale)
    assert (scores.probs[:, 0] == 1.0).all()
    assert scores.margin[:, 0].min() > 45.0 and scores.margin[:, 0].max() < 70.0
    assert np.all(np.diff(scores.cosine[:, 0]) > 0)


@pytest.mark.slow
@pytest.mark.parametrize("warp", sorted(WARPS))
@pytest.mark.parametrize("member", ["sharp", "noisy"])
def test_the_box_is_invariant_to_monotone_transforms_of_the_cosines(member: str,
                                                                    warp: str) -> None:
    base, warped = boxes(member, None), boxes(member, warp)
    assert [b for b, _, _ in warped] == [b for b, _, _ in base]
    assert [w for _, w, _ in warped] == [w for _, w, _ in base]


@pytest.mark.slow
def test_the_sharp_box_is_tight() -> None:
    ious = [max(box_iou(box, t) for t in s.target_boxes)
            for (box, _, _), s in zip(boxes("sharp", None), scenes())]
    assert min(ious) >= 0.4 and np.mean(np.asarray(ious) >= 0.5) >= 0.75, ious
