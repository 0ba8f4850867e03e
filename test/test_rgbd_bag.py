"""RGB-D bags: compressed colour, depth and camera_info written with rosbags, read back,
evaluated, and replayed into the node over DDS with a RealSense driver's topic names."""

from __future__ import annotations

import numpy as np
import pytest
from ros_harness import NodeProcess, Probe, stamp_of

from clip_perception.core.io.result_json import parse_result
from clip_perception.testing.rgbd_scenes import approaching_sequence
from clip_perception.tools.labelled_bag import read_labelled_rgbd_bag, write_labelled_rgbd_bag

T0 = 1_650_000_000 * 10**9
STEP = 250_000_000  # 4 Hz
# realsense2_camera's topics (namespace camera, node camera) with align_depth.enable
REALSENSE = {
    "image/compressed": "/camera/camera/color/image_raw/compressed",
    "depth": "/camera/camera/aligned_depth_to_color/image_raw",
    "camera_info": "/camera/camera/color/camera_info",
}


def write_realsense_bag(path, scenes, encoding="16UC1", storage="sqlite3"):
    from clip_perception.tools.bag_writer import write_bag

    times = [T0 + (i + 1) * STEP for i in range(len(scenes))]
    return times, write_bag(
        path, [(t, s.image) for t, s in zip(times, scenes)], [(T0, "pick up the red block")],
        image_topic="/camera/camera/color/image_raw", image_format="jpeg",
        depth=[(t, s.depth) for t, s in zip(times, scenes)], depth_encoding=encoding,
        depth_topic=REALSENSE["depth"], camera=scenes[0].camera,
        camera_info_topic=REALSENSE["camera_info"], frame_id="camera_color_optical_frame",
        storage=storage)


def within_goal(point, truth) -> bool:
    return np.linalg.norm(np.asarray(point) - truth) <= max(0.02, 0.02 * np.linalg.norm(truth))


@pytest.mark.parametrize("encoding,storage", [("16UC1", "sqlite3"), ("32FC1", "mcap")])
def test_rgbd_bag_round_trips(tmp_path, encoding, storage):
    scenes = approaching_sequence(3, seed=2)
    bag = write_labelled_rgbd_bag(tmp_path / "bag", scenes, depth_encoding=encoding,
                                  storage=storage)
    back = read_labelled_rgbd_bag(bag)
    assert len(back) == 3
    for a, b in zip(scenes, back):
        assert b.target == "red block" and b.target_box == a.target_box
        assert np.abs(b.image.astype(int) - a.image).mean() < 4, "jpeg, close to the original"
        valid = a.depth > 0
        assert np.allclose(b.depth[valid], a.depth[valid], atol=0.0006)
        assert np.all(b.depth[~valid] == 0)
        assert b.camera == a.camera and np.allclose(b.truth, a.truth)


@pytest.mark.slow
def test_evaluate_reports_3d_error_on_an_rgbd_bag(tmp_path, capsys):
    from clip_perception.tools.evaluate import main

    bag = write_labelled_rgbd_bag(tmp_path / "bag", approaching_sequence(4, seed=3))
    assert main(["--rgbd", "--bag", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "found=4 located=4 within_goal=1.000" in out, out


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("encoding,storage", [("16UC1", "sqlite3"), ("32FC1", "mcap")])
def test_replayed_rgbd_bag_gives_3d_outputs(encoding, storage, ros_domain, tmp_path):
    from clip_perception.tools.bag_replay import BagPlayer

    scenes = approaching_sequence(6, seed=1)
    times, bag = write_realsense_bag(tmp_path / "bag", scenes, encoding, storage)
    truth = dict(zip(times, scenes))
    node = NodeProcess(ros_domain, tmp_path / "node.log",
                       {"image_transport": "compressed", "use_depth": True}, remaps=REALSENSE)
    probe = Probe(ros_domain)
    probe.enable_rgbd()
    try:
        player = BagPlayer(probe.node, bag)
        probe.spin_until(lambda: player.wait_for_subscribers(0.05), 40)
        assert player.wait_for_subscribers(1), node.log()
        sent = player.play(on_publish=lambda topic, msg: probe.spin(0.0))
        assert sent == 3 * len(scenes) + 1
        last = times[-1]
        assert probe.spin_until(
            lambda: any(parse_result(m.data).stamp_ns == last for _, m in probe.received["result"]),
            30), f"the last frame was not processed:\n{node.log()}"
        probe.spin(0.3)
        poses = {stamp_of(m): m for _, m in probe.received["target_pose"]}
        assert poses and set(poses) <= set(times), "poses carry the recorded stamps"
        for stamp, pose in poses.items():
            p = pose.pose.pose.position
            assert pose.header.frame_id == "camera_color_optical_frame"
            assert within_goal((p.x, p.y, p.z), truth[stamp].truth), (stamp, p)
        results = [parse_result(m.data) for _, m in probe.received["result"]]
        found = [r for r in results if r.target("red block").present]
        assert len(found) == len(results), results
        statuses = [r.target("red block").depth_status for r in found]
        assert all(s == "ok" for s in statuses), statuses
        assert {r.stamp_ns for r in found} == set(poses), "one pose per processed frame"
        assert any(m.type == m.CUBE for _, a in probe.received["markers"] for m in a.markers)
        player.close()
    finally:
        probe.close()
        node.stop()
