"""Several cameras in one node, over real DDS: each camera's outputs are its own.

The node runs the known-answer colour encoder with ``cameras:=[a, b]``; the
probe publishes a scene with the target on one camera and one without on the
other, then swaps them, and checks every camera's detected/region/debug_image
against its own scene, stamps and frame ids included. A second test runs a
two-camera node beside a single-camera one and checks that each camera's box
is exactly the box the same frame gets alone.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_harness import MATCH_SETTLE, stamp_of

from clip_perception.core.detect.windows import box_iou
from clip_perception.testing.scenes import make_scene

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(300)]

T0 = 1_700_000_000 * 10**9
CAMERAS = ("a", "b")


def listen(probe, cameras=CAMERAS):
    """Subscribe the probe to each camera's outputs and make its image publishers."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, RegionOfInterest
    from std_msgs.msg import Bool

    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {}
    for c in cameras:
        for topic, cls in (("detected", Bool), ("region", RegionOfInterest),
                           ("debug_image", Image)):
            probe.node.create_subscription(cls, f"{c}/{topic}",
                                           probe._recorder(f"{c}/{topic}"), reliable)
        pubs[c] = probe.node.create_publisher(
            Image, f"{c}/image", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    assert probe.spin_until(lambda: probe.command_pub.get_subscription_count() > 0 and all(
        p.get_subscription_count() > 0 for p in pubs.values()), 40), "node never subscribed"
    probe.spin(MATCH_SETTLE)
    return pubs


def send_both(probe, pubs, frames: dict, stamp: int, timeout=30.0) -> dict:
    """Publish each camera's frame until its debug_image with ``stamp`` came back."""
    def back(c):
        return next((m for _, m in probe.received[f"{c}/debug_image"]
                     if stamp_of(m) == stamp), None)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for c, rgb in frames.items():
            if back(c) is None:
                pubs[c].publish(probe.make_image(rgb, stamp, frame_id=f"{c}_optical"))
        if probe.spin_until(lambda: all(back(c) is not None for c in frames), 1.5):
            probe.spin(0.3)  # the rest of the same results
            return {c: back(c) for c in frames}
    raise AssertionError(f"no debug_image for {stamp} from "
                         f"{[c for c in frames if back(c) is None]}")


def last_region(probe, camera):
    _, m = probe.received["region" if camera is None else f"{camera}/region"][-1]
    return (m.x_offset, m.y_offset, m.x_offset + m.width, m.y_offset + m.height)


def test_two_cameras_in_one_node_answer_independently(start):
    node, probe = start({"cameras": list(CAMERAS)}, wait=False)
    pubs = listen(probe)
    assert probe.command("find the red block", expect_targets="red block")
    rng = np.random.default_rng(21)
    with_target = make_scene(rng, target_colour="red", present=True, distractors=2)
    without = make_scene(rng, target_colour="red", present=False, distractors=2)

    for step, (scene_a, scene_b) in enumerate(((with_target, without), (without, with_target))):
        stamp = T0 + step + 1
        for c in CAMERAS:
            probe.received[f"{c}/detected"].clear()
            probe.received[f"{c}/region"].clear()
        debug = send_both(probe, pubs, {"a": scene_a.image, "b": scene_b.image}, stamp)
        for c, s in (("a", scene_a), ("b", scene_b)):
            assert debug[c].header.frame_id == f"{c}_optical", "results crossed cameras"
            detected = [m.data for _, m in probe.received[f"{c}/detected"]]
            assert detected and all(d is (s.target_box is not None) for d in detected), (
                c, step, detected)
            if s.target_box is None:
                assert probe.received[f"{c}/region"] == []
            else:
                assert box_iou(last_region(probe, c), s.target_box) >= 0.5
    assert probe.received["detected"] == [], "a named camera published on the unnamed topic"
    assert probe.targets() == "red block"  # targets stays node-level
    assert probe.spin_until(lambda: all(  # a /diagnostics message after both steps
        int(probe.counters().get(f"{c}/frames_processed", 0)) >= 2 for c in CAMERAS), 10), \
        probe.counters()
    counters = probe.counters()
    for c in CAMERAS:
        assert float(counters[f"{c}/rate_hz"]) > 0
        assert int(counters[f"{c}/frames_received"]) >= 2
    assert int(counters["frames_processed"]) >= 4
    assert node.alive()


def docs(probe, topic: str, stamp: int) -> list[dict]:
    """The result documents received on ``topic`` for ``stamp``."""
    import json

    found = [json.loads(m.data) for _, m in probe.received[topic]]
    return [d for d in found if d["stamp"]["sec"] * 10**9 + d["stamp"]["nanosec"] == stamp]


def test_each_camera_gets_exactly_the_box_its_frame_gets_alone(start):
    """Frames of two cameras, sent together so the node may batch them, get the same box,
    detected flag and score as each frame gets in a single-camera node. The ``sharp``
    encoder: most windows on the object have probability 1.0 exactly, where a box
    fitted to probabilities would depend on batch arithmetic and ties."""
    from std_msgs.msg import String

    model = "clip_perception.testing.known_answer:sharp"
    multi, probe = start({"cameras": list(CAMERAS), "model": model}, wait=False)
    pubs = listen(probe)
    # the single node gets its target as a parameter: /command from this probe may reach
    # it before discovery matched them, and /targets is shared with the two-camera node
    single, alone = start({"model": model, "target": "find the red block"})
    for p in (probe, alone):
        p.node.create_subscription(String, "result" if p is alone else "a/result",
                                   p._recorder("result" if p is alone else "a/result"), 10)
    probe.node.create_subscription(String, "b/result", probe._recorder("b/result"), 10)
    probe.spin(MATCH_SETTLE)
    assert probe.command("find the red block", expect_targets="red block")
    rng = np.random.default_rng(5)
    scenes = {c: make_scene(rng, target_colour="red", present=True, distractors=3)
              for c in CAMERAS}
    debug = send_both(probe, pubs, {c: s.image for c, s in scenes.items()}, T0 + 1)
    for c, scene in scenes.items():
        # the result document of the frame itself (``region`` waits for ``stable``)
        stamp = T0 + 10 + CAMERAS.index(c)
        end = time.monotonic() + 30
        while not docs(alone, "result", stamp) and time.monotonic() < end:
            alone.image(scene.image, stamp, frame_id=f"{c}_optical")
            alone.spin_until(lambda ns=stamp: bool(docs(alone, "result", ns)), 1.5)
        mine, theirs = docs(probe, f"{c}/result", T0 + 1), docs(alone, "result", stamp)
        assert theirs, f"no result from the single-camera node:\n{single.log()}"
        assert mine, (c, probe.received.keys())
        assert debug[c].header.frame_id == f"{c}_optical"
        keep = ("present", "score", "box")
        assert [{k: t[k] for k in keep} for t in mine[-1]["targets"]] == \
            [{k: t[k] for k in keep} for t in theirs[-1]["targets"]], c
        target = mine[-1]["targets"][0]
        assert target["present"] and box_iou(target["box"], scene.target_box) >= 0.5, c
    assert multi.alive() and single.alive()


def test_invalid_camera_names_fail_at_configure_with_a_clear_error(start):
    node, probe = start({"cameras": ["a", "a"]}, wait=False)
    assert node.wait(40) == 1
    assert "camera names repeat: a" in node.log()
