"""Input faults an RGB-D node must survive, over real DDS, on one node process:
camera_info that never arrives, depth that stops, stamps that run backwards (a bag
looped), and a camera that stops for 30 s. Colour results go on, 3D stops with a
counted reason and comes back with its input, and /diagnostics says what happened.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_harness import NodeProcess, Probe, stamp_of

from clip_perception.core.io.compressed import encode_compressed
from clip_perception.core.io.result_json import parse_result
from clip_perception.testing.rgbd_scenes import make_rgbd_scene

pytestmark = [pytest.mark.ros]

T0 = 1_700_000_000 * 10**9
STEP = 100_000_000  # 10 Hz stamps


@pytest.fixture(scope="module")
def rgbd(module_ros_domain, tmp_path_factory):
    """One RGB-D node (0.5 s diagnostics: a 5 s health window) and its probe."""
    log = tmp_path_factory.mktemp("fault_inputs") / "node.log"
    node = NodeProcess(module_ros_domain, log, {
        "image_transport": "compressed", "use_depth": True, "diagnostics_period": 0.5,
        "no_frames_timeout": 5.0})
    probe = Probe(module_ros_domain)
    probe.enable_rgbd()
    try:
        assert probe.wait_for_rgbd_node(60), f"node never subscribed:\n{node.log()}"
        assert probe.command("find the red block", expect_targets="red block")
        yield node, probe
    finally:
        probe.close()
        node.stop()


class Feed:
    """Publishes one RGB-D scene frame by frame; each input can be left out."""

    def __init__(self, probe: Probe):
        self.probe = probe
        self.scene = make_rgbd_scene(np.random.default_rng(7), target_colour="red",
                                     distractors=1)
        self.jpeg = encode_compressed(self.scene.image, "jpeg", 90)
        self.stamp = T0

    def send(self, info=True, depth=True, stamp=None) -> int:
        self.stamp = self.stamp + STEP if stamp is None else stamp
        p = self.probe
        if info:
            p.camera_info(self.scene.camera, self.stamp)
        if depth:
            p.depth(self.scene.depth, self.stamp)
        p.compressed(self.jpeg, self.stamp)
        return self.stamp

    def until_result(self, status: str | None = None, timeout: float = 20.0, **inputs):
        """Send frames until a result for one of them comes back (with ``depth_status``
        ``status``): ``(stamp, result)``. A colour frame without depth waits for it
        up to 0.5 s, so results lag the frames sent."""
        first = self.stamp + STEP
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.send(**inputs)
            found = None

            def match():
                nonlocal found
                for _, m in reversed(self.probe.received["result"]):
                    r = parse_result(m.data)
                    if first <= r.stamp_ns <= self.stamp and (
                            status is None or r.target("red block").depth_status == status):
                        found = (r.stamp_ns, r)
                        return True
                return False
            if self.probe.spin_until(match, 0.3):
                return found
        raise AssertionError(f"no result with depth_status {status!r}; counters "
                             f"{self.probe.counters()}")

    def result(self, stamp: int):
        for _, m in reversed(self.probe.received["result"]):
            r = parse_result(m.data)
            if r.stamp_ns == stamp:
                return r
        return None

    def pose(self, stamp: int) -> bool:
        return any(stamp_of(m) == stamp for _, m in self.probe.received["target_pose"])


def counter(probe: Probe, key: str) -> int:
    return int(probe.counters().get(key, 0))


def test_missing_camera_info_and_depth_stop_3d_only_and_stamps_running_back_are_fine(rgbd):
    node, probe = rgbd
    feed = Feed(probe)
    # camera_info never arrives: colour results go on, 3D does not, the reason is counted
    stamp, result = feed.until_result("camera_info_missing", info=False)
    assert result.target("red block").present and not feed.pose(stamp)
    assert probe.spin_until(lambda: counter(probe, "no_3d_camera_info_missing") > 0, 5)
    # ... it arrives: 3D comes
    stamp, _ = feed.until_result("ok")
    assert probe.spin_until(lambda: feed.pose(stamp), 5)
    # depth stops: colour results go on, no pose, counted
    stamp, result = feed.until_result("depth_missing", depth=False)
    assert result.target("red block").present and not feed.pose(stamp)
    assert probe.spin_until(lambda: counter(probe, "no_3d_depth_missing") > 0, 5)
    # ... depth comes back: so does 3D
    stamp, _ = feed.until_result("ok")
    assert probe.spin_until(lambda: feed.pose(stamp), 5)
    # stamps run backwards (a bag looped): results carry the new stamps, with 3D
    feed.stamp = T0 - 60 * 10**9
    stamp, _ = feed.until_result("ok")
    assert stamp < T0 and probe.spin_until(lambda: feed.pose(stamp), 5)
    assert node.alive(), node.log()


@pytest.mark.slow
def test_a_camera_that_stops_for_30_s_is_a_warning_then_ok_again_without_a_restart(rgbd):
    node, probe = rgbd
    feed = Feed(probe)
    pid = node.proc.pid
    feed.until_result("ok")
    assert probe.spin_until(lambda: level_message(probe)[0] == 0, 10), level_message(probe)
    stopped = time.monotonic()
    warned = None
    while time.monotonic() - stopped < 30.0:  # the camera is silent
        probe.spin(0.25)
        level, message = level_message(probe)
        if warned is None and level == 1 and message.startswith("no frames for "):
            warned = time.monotonic() - stopped
    assert warned is not None and warned < 8.0, f"no WARN 'no frames for N s' ({warned})"
    level, message = level_message(probe)
    assert level == 1 and int(message.split()[3]) >= 25, (level, message)
    feed.until_result("ok")  # the camera is back
    back = time.monotonic()
    while time.monotonic() - back < 10 and level_message(probe)[0] != 0:
        feed.send()
        probe.spin(0.2)
    assert level_message(probe)[0] == 0, level_message(probe)
    assert node.alive() and node.proc.pid == pid


def level_message(probe: Probe) -> tuple[int, str]:
    msg = probe.latest("/diagnostics")
    if msg is None or not msg.status:
        return -1, ""
    status = msg.status[0]
    level = status.level
    return (level[0] if isinstance(level, bytes) else int(level)), status.message
