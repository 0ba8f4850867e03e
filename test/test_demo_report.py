"""The demo reports each result for the frame and targets the result names (not by timing)."""

from __future__ import annotations

import numpy as np

from clip_perception.core.io.result_json import FrameResult, TargetEntry, parse_result, result_json
from clip_perception.tools.demo import STEP, T0, describe, make_sequence


def test_a_result_is_described_for_its_own_frame_and_targets():
    sequence = make_sequence(12)
    stamp, scene, truth = sequence[7]
    red, blue = truth.boxes["red"], truth.boxes["blue"]
    # The node answered frame 7 for the *next* command's targets (blue and red), while
    # the previous command (green) was still the last one sent before frame 7.
    result = FrameResult(stamp, "camera_color_optical_frame", 640, 480, (
        TargetEntry("blue block", True, 0.99, blue, tuple(truth.centres["blue"]),
                    tuple(np.eye(3).reshape(-1) * 1e-4), "ok"),
        TargetEntry("red block", True, 0.98, red, None, None, "depth_zero"),
    ))
    back = parse_result(result_json(result))  # as the demo receives it
    assert (back.stamp_ns - T0) // STEP == 7
    lines = describe(back, truth)
    assert lines[0].startswith("[blue block] FOUND") and "IoU with the true box 1.00" in lines[0]
    assert "error vs truth 0.0 mm" in lines[0]
    assert lines[1].startswith("[red block] FOUND") and "no 3D position (depth_zero)" in lines[1]
    assert not any("green" in line for line in lines)


def test_a_missed_target_that_is_in_the_frame_is_flagged():
    stamp, _, truth = make_sequence(3)[1]
    result = FrameResult(stamp, "cam", 640, 480,
                         (TargetEntry("red block", False, 0.1, None),))
    assert describe(result, truth) == ["[red block] not in view (score 0.10)  <- it IS in the "
                                       "frame"]
