"""The node over real DDS with compressed colour, depth and camera_info.

The node runs the known-answer colour encoder; scenes come from
:mod:`clip_perception.testing.rgbd_scenes` with known intrinsics and 3D truth.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from ros_harness import NodeProcess, Probe, stamp_of

from clip_perception.core.io.compressed import encode_compressed
from clip_perception.core.io.result_json import parse_result
from clip_perception.testing.rgbd_scenes import make_rgbd_scene

pytestmark = [pytest.mark.ros, pytest.mark.slow]

T0 = 1_700_000_000 * 10**9
FRAME = "camera_color_optical_frame"
RGBD = {"image_transport": "compressed", "use_depth": True}


@pytest.fixture
def rgbd(ros_domain, tmp_path):
    """An RGB-D node (compressed colour + depth + camera_info) and a probe; torn down after."""
    started = []

    def _start(params=None):
        node = NodeProcess(ros_domain, tmp_path / "node.log", {**RGBD, **(params or {})})
        probe = Probe(ros_domain)
        probe.enable_rgbd()
        started.append((node, probe))
        assert probe.wait_for_rgbd_node(40), f"node never subscribed:\n{node.log()}"
        return node, probe

    yield _start
    for node, probe in started:
        probe.close()
        node.stop()


def within_goal(point, truth) -> bool:
    return np.linalg.norm(np.asarray(point) - truth) <= max(0.02, 0.02 * np.linalg.norm(truth))


def results_for(probe: Probe, stamp: int):
    return [parse_result(m.data) for _, m in probe.received["result"]
            if parse_result(m.data).stamp_ns == stamp]


def send_rgbd(probe: Probe, s, stamp: int, encoding="16UC1", depth=None, depth_stamp=None,
              camera=None, jpeg: bytes | None = None, timeout=20.0):
    """Publish camera_info, depth and compressed colour until a result carries ``stamp``."""
    jpeg = jpeg if jpeg is not None else encode_compressed(s.image, "jpeg", 90)
    depth = s.depth if depth is None else depth
    end_spins = int(timeout / 1.5) + 1
    for _ in range(end_spins):
        probe.camera_info(camera or s.camera, stamp)
        probe.spin(0.05)  # a driver's camera_info precedes the frames it describes
        probe.depth(depth, stamp if depth_stamp is None else depth_stamp, encoding)
        probe.compressed(jpeg, stamp)
        if probe.spin_until(lambda: results_for(probe, stamp), 1.5):
            probe.spin(0.2)  # the pose and markers of the same frame
            return results_for(probe, stamp)[-1]
    raise AssertionError(f"no result for frame {stamp}")


def poses_for(probe: Probe, stamp: int):
    return [m for _, m in probe.received["target_pose"] if stamp_of(m) == stamp]


def test_target_pose_matches_the_truth_in_both_depth_encodings_with_markers(rgbd):
    node, probe = rgbd()
    assert probe.command("find the red block", expect_targets="red block")
    rng = np.random.default_rng(21)
    stamp = T0
    for encoding in ("16UC1", "32FC1"):
        for _ in range(3):
            s = make_rgbd_scene(rng, target_colour="red", distractors=int(rng.integers(0, 3)))
            stamp += 100_000_000
            result = send_rgbd(probe, s, stamp, encoding)
            entry = result.target("red block")
            assert result.frame_id == FRAME and entry.present, result
            assert entry.depth_status == "ok" and within_goal(entry.position, s.truth), \
                (encoding, entry, s.truth)
            poses = poses_for(probe, stamp)
            assert len(poses) == 1, "one target_pose per frame"
            pose = poses[0]
            assert pose.header.frame_id == FRAME
            p = pose.pose.pose.position
            assert within_goal((p.x, p.y, p.z), s.truth)
            assert pose.pose.pose.orientation.w == 1.0
            cov = np.array(pose.pose.covariance).reshape(6, 6)
            assert np.allclose(cov[:3, :3], np.array(entry.covariance).reshape(3, 3))
            assert np.all(np.diag(cov)[:3] > 0) and np.all(np.diag(cov)[3:] >= 1e5)
            markers = [m for _, arr in probe.received["markers"] for m in arr.markers
                       if stamp_of(m) == stamp]
            cube = [m for m in markers if m.type == m.CUBE and m.action == m.ADD]
            text = [m for m in markers if m.type == m.TEXT_VIEW_FACING]
            assert len(cube) == 1 and len(text) == 1, markers
            assert within_goal((cube[0].pose.position.x, cube[0].pose.position.y,
                                cube[0].pose.position.z), s.truth)
            assert text[0].text.startswith("red block ")
            assert 0.01 < cube[0].scale.x < 0.5, "sized from the region at its depth"
    # Target gone: the markers are deleted and no pose is published.
    gone = make_rgbd_scene(rng, target_colour="blue", present=True, distractors=0)
    stamp += 100_000_000
    result = send_rgbd(probe, gone, stamp)
    assert not result.target("red block").present
    assert poses_for(probe, stamp) == []
    deletes = [m for _, arr in probe.received["markers"] for m in arr.markers
               if stamp_of(m) == stamp and m.action == m.DELETE]
    assert {m.id for m in deletes} == {cube[0].id, text[0].id}  # the last track's
    assert node.alive()


def test_invalid_depth_and_unmatched_stamps_give_no_pose_but_a_counted_reason(rgbd):
    node, probe = rgbd()
    assert probe.command("find the red block", expect_targets="red block")
    rng = np.random.default_rng(5)
    s = make_rgbd_scene(rng, target_colour="red", distractors=1)
    c = s.camera
    zero_f = types.SimpleNamespace(fx=0.0, fy=c.fy, cx=c.cx, cy=c.cy, width=c.width,
                                   height=c.height)  # fx = 0 on the wire
    cases = [  # (name, kwargs, expected reason)
        ("zero", dict(depth=np.zeros_like(s.depth)), "depth_zero"),
        ("nan", dict(depth=np.full_like(s.depth, np.nan), encoding="32FC1"), "depth_nan"),
        ("far", dict(depth=np.full_like(s.depth, 15.0), encoding="32FC1"),
         "depth_out_of_range"),
        ("size", dict(depth=s.depth[:, :600].copy()), "depth_size_mismatch"),
        ("stamp", dict(depth_stamp=None), "depth_missing"),
        ("focal", dict(camera=zero_f), "camera_info_invalid"),
    ]
    stamp = T0
    for name, kwargs, reason in cases:
        stamp += 1_000_000_000
        if name == "stamp":
            kwargs = {"depth_stamp": stamp + 200_000_000}  # 200 ms > depth_sync_tolerance
        result = send_rgbd(probe, s, stamp, **kwargs)
        entry = result.target("red block")
        assert entry.present, (name, result)
        assert entry.position is None and entry.depth_status == reason, (name, entry)
        assert poses_for(probe, stamp) == [], f"{name}: a pose from invalid depth"

    def counted():
        c = probe.counters()
        return all(int(c.get(f"no_3d_{reason}", "0")) >= 1 for _, _, reason in cases)
    assert probe.spin_until(counted, 10), probe.counters()
    log = node.log()
    assert "no 3D position for red block" in log and "camera_info" in log
    # Valid again: a pose comes back.
    stamp += 1_000_000_000
    result = send_rgbd(probe, s, stamp)
    assert result.target("red block").depth_status == "ok" and len(poses_for(probe, stamp)) == 1
    assert node.alive()


def test_corrupt_jpeg_payloads_are_counted_logged_and_survived(rgbd):
    node, probe = rgbd()
    assert probe.command("find the red block", expect_targets="red block")
    s = make_rgbd_scene(np.random.default_rng(9), target_colour="red")
    good = encode_compressed(s.image, "jpeg")
    bad = [good[: len(good) // 2], b"\xff\xd8" + bytes(1000), b"not an image at all", b""]
    for i, payload in enumerate(bad):
        probe.camera_info(s.camera, T0 + i)
        probe.depth(s.depth, T0 + i)
        probe.compressed(payload, T0 + i)
        probe.spin(0.1)
    assert probe.spin_until(lambda: probe.counters().get("images_rejected") == str(len(bad)),
                            10), probe.counters()
    assert "truncated JPEG" in node.log()
    assert not any(results_for(probe, T0 + i) for i in range(len(bad)))
    result = send_rgbd(probe, s, T0 + 100)
    assert result.target("red block").depth_status == "ok" and node.alive()
