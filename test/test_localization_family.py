"""Localization goals across the known-answer encoder family (issue 7).

The box method must not depend on the encoder's response curve: every member
(linear, saturating, constant background similarity, noisy, CLIP-like) must
meet the goals on the same seeded hard scenes, and a saturating encoder must
not inflate the box, which the old probability-heatmap box did.
"""

from __future__ import annotations

import numpy as np
import pytest
from family import members

from clip_perception.core.detect.config import DetectorConfig
from clip_perception.core.detect.detector import Detector
from clip_perception.core.detect.windows import box_iou
from clip_perception.testing import known_answer
from clip_perception.testing.scenes import hard_scene_set
from clip_perception.tools.evaluate import GOALS, MAX_CROPS, SMALL_GOAL, evaluate


@pytest.fixture(scope="module")
def scenes():
    return hard_scene_set(16, seed=5)


@pytest.mark.slow
@pytest.mark.parametrize("name", members())
def test_goals_hold_for_every_family_member(name: str, scenes) -> None:
    report = evaluate(Detector(known_answer.load(name)), scenes, name)
    assert report.presence_accuracy >= GOALS["presence_accuracy"], report.line()
    assert report.pointing >= GOALS["pointing"], report.line()
    assert report.iou50 >= GOALS["iou50"], report.line()
    assert report.crops_per_frame <= MAX_CROPS, report.line()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["concave", "clip_like"])
def test_saturating_encoders_do_not_inflate_the_box(name: str) -> None:
    """Fails with the probability-heatmap box (box_method: heatmap), whose boxes
    on these encoders are about twice the object's area."""
    encoder = known_answer.load(name)
    detector = Detector(encoder, DetectorConfig())
    ratios, ious = [], []
    for scene in hard_scene_set(12, seed=11, absent_fraction=0.0, cut_fraction=0.0,
                                twin_fraction=0.0, same_colour_fraction=0.0):
        box = detector.detect(scene.image, [scene.target]).targets[0].box
        truth = scene.target_box
        area = (truth[2] - truth[0]) * (truth[3] - truth[1])
        ratios.append((box[2] - box[0]) * (box[3] - box[1]) / area)
        ious.append(box_iou(box, truth))
    assert np.median(ratios) <= 1.5, ratios
    assert np.mean(np.asarray(ious) >= 0.5) >= 0.85, ious


@pytest.mark.slow
@pytest.mark.parametrize("name", ["noisy", "unnormalised"])
def test_small_objects_meet_their_goal_under_feature_noise(name: str) -> None:
    """30-60 px objects on the members with per-dimension noise: on `noisy` this was
    57 of 80 when every stage fitted plain ranks and the last grid reached half a
    window past its anchor (now 62); `unnormalised` was 63 of 80 (now 71)."""
    scenes = [scene for seed in (8, 9)
              for scene in hard_scene_set(40, seed=seed, size_range=(30, 60),
                                          absent_fraction=0.0)]
    report = evaluate(Detector(known_answer.load(name)), scenes, name)
    assert report.iou50 >= SMALL_GOAL, report.line()
