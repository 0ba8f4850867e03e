"""Rosbag replay: a bag written with ``rosbags`` is replayed into the running node."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ros_harness import NodeProcess, Probe, ros_env, stamp_of

from clip_perception.core.detect.windows import box_iou
from clip_perception.testing.scenes import background, paint
from clip_perception.tools.bag_writer import write_bag

# rclpy (message serialization), and the node and the replayer over DDS.
pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

T0 = 1_650_000_000 * 10**9
STEP = 200_000_000  # 5 Hz


def moving_block(frames: int = 6):
    """Frames of a red block sliding right, with the true box of each."""
    rng = np.random.default_rng(4)
    base = background(rng, 640, 480)
    out = []
    for i in range(frames):
        image = base.copy()
        box = (60 + 70 * i, 200, 160 + 70 * i, 290)
        paint(image, box, "red", rng)
        paint(image, (500, 40, 600, 120), "blue", rng)
        out.append((T0 + (i + 1) * STEP, image, box))
    return out


def test_bag_written_with_rosbags_round_trips_through_rclpy(tmp_path):
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    frames = moving_block(2)
    bag = write_bag(tmp_path / "bag", [(t, img) for t, img, _ in frames], [(T0, "find it")])
    with Reader(bag) as reader:
        messages = [(c.topic, t, raw) for c, t, raw in reader.messages()]
    assert [m[0] for m in messages] == ["/command", "/camera/image_raw", "/camera/image_raw"]
    assert deserialize_message(bytes(messages[0][2]), String).data == "find it"
    image = deserialize_message(bytes(messages[1][2]), Image)
    assert (image.width, image.height, image.encoding, image.step) == (640, 480, "rgb8", 1920)
    assert stamp_of(image) == frames[0][0] == messages[1][1]
    assert np.array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(480, 640, 3),
                          frames[0][1])


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_replayed_bag_drives_the_node(storage, ros_domain, tmp_path):
    from clip_perception.tools.bag_replay import BagPlayer

    frames = moving_block()
    bag = write_bag(tmp_path / "bag", [(t, img) for t, img, _ in frames],
                    [(T0, "pick up the red block")], storage=storage)
    node = NodeProcess(ros_domain, tmp_path / "node.log", remaps={"image": "/camera/image_raw"})
    probe = Probe(ros_domain)
    try:
        player = BagPlayer(probe.node, bag)
        probe.spin_until(lambda: player.wait_for_subscribers(0.05), 40)
        assert player.wait_for_subscribers(1), node.log()
        sent = player.play(on_publish=lambda topic, msg: probe.spin(0.0))
        assert sent == len(frames) + 1
        assert probe.spin_until(
            lambda: any(stamp_of(m) == frames[-1][0] for _, m in probe.received["debug_image"]),
            20), "the last frame of the bag was not processed"
        probe.spin(0.3)
        truth = {t: box for t, _, box in frames}
        stamps = [stamp_of(m) for _, m in probe.received["debug_image"]]
        assert set(stamps) <= set(truth), "outputs carry the recorded frame stamps"
        detected = [m.data for _, m in probe.received["detected"]]
        assert detected and all(detected)
        regions = [(m.x_offset, m.y_offset, m.x_offset + m.width, m.y_offset + m.height)
                   for _, m in probe.received["region"]]
        assert len(regions) == len(stamps)
        for stamp, region in zip(stamps, regions):
            assert box_iou(region, truth[stamp]) >= 0.5, (stamp, region, truth[stamp])
        player.close()
    finally:
        probe.close()
        node.stop()


@pytest.mark.slow
def test_replay_command_line(ros_domain, tmp_path):
    frames = moving_block(3)
    bag = write_bag(tmp_path / "bag", [(t, img) for t, img, _ in frames],
                    [(T0, "find the red block")], image_topic="/cam/rgb")
    node = NodeProcess(ros_domain, tmp_path / "node.log")
    probe = Probe(ros_domain)
    try:
        replay = subprocess.run(
            [sys.executable, "-m", "clip_perception.tools.bag_replay", str(bag),
             "--remap", "/cam/rgb:=/image", "--wait-for-subscribers", "40", "--rate", "2"],
            env=ros_env(ros_domain), capture_output=True, text=True, timeout=120)
        assert replay.returncode == 0, replay.stderr
        assert f"published {len(frames) + 1} messages" in replay.stdout + replay.stderr
        assert probe.spin_until(lambda: probe.received["detected"], 20), node.log()
        assert probe.latest("detected").data is True
    finally:
        probe.close()
        node.stop()
