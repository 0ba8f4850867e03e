"""Camera-sized frames between two processes, with and without the large-frame profile.

A publisher process sends best-effort 640x480 rgb8 sensor_msgs/Image frames
(sensor-data QoS) to a subscriber in another process, over loopback only. Fast
DDS's default 512 KiB shared-memory segment cannot carry a 900 KiB frame, so
without ``config/fastdds_large_frames.xml`` few or no frames arrive (measured
here, Jazzy's Fast DDS 2.14: 2, 0, 6, 2 and 4 of 10 in five runs); with the profile
on the publisher's side only, all 10 did every time.

The test asserts the "with" case and records the "without" count (printed, and
in the test's report with ``-rA``) without asserting it, since it depends on the
Fast DDS version. Run this file directly to see both numbers:
``python test/test_fastdds_profile.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from clip_perception.ros.dds_profile import PROFILE_ENV_VARS

WIDTH, HEIGHT = 640, 480
FRAMES = 10
PERIOD_S = 0.1
# This file's ROS_DOMAIN_IDs (one per run): offsets 0-1 of conftest.py's block.
_DOMAIN_BASE = int(os.environ.get("CLIP_PERCEPTION_TEST_DOMAIN_BASE", "46"))
DOMAIN_WITHOUT, DOMAIN_WITH = _DOMAIN_BASE, _DOMAIN_BASE + 1
PROCESS_TIMEOUT_S = 40.0


def _pixel(index: int) -> int:
    return (37 * index + 11) % 256


# ---------------------------------------------------------------- the two processes

def _publish(topic: str, frames: int) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("frame_publisher")
    pub = node.create_publisher(Image, topic, qos_profile_sensor_data)
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no subscriber matched"}), flush=True)
            sys.exit(2)
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(1.0)  # let the subscriber's reader match this writer too
    for index in range(frames):
        msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", is_bigendian=0,
                    step=WIDTH * 3)
        msg.header.frame_id = str(index)
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.data = bytes([_pixel(index)]) * (WIDTH * HEIGHT * 3)
        pub.publish(msg)
        time.sleep(PERIOD_S)
    time.sleep(1.5)  # keep the writer (and its shared-memory segment) alive for delivery
    print(json.dumps({"sent": frames}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def _subscribe(topic: str, frames: int, wait_s: float, stop_file: str | None) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("frame_subscriber")
    got: dict[str, int] = {"received": 0, "intact": 0}

    def on_frame(msg: Image) -> None:
        got["received"] += 1
        expected = _pixel(int(msg.header.frame_id))
        data = msg.data
        if (msg.width, msg.height, len(data)) == (WIDTH, HEIGHT, WIDTH * HEIGHT * 3) \
                and data[0] == expected and data[-1] == expected:
            got["intact"] += 1

    node.create_subscription(Image, topic, on_frame, qos_profile_sensor_data)
    print("READY", flush=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and got["received"] < frames:
        rclpy.spin_once(node, timeout_sec=0.05)
        if stop_file and os.path.exists(stop_file):
            rclpy.spin_once(node, timeout_sec=0.2)  # anything still in flight
            break
    print(json.dumps(got), flush=True)
    node.destroy_node()
    rclpy.shutdown()


# ---------------------------------------------------------------- the measurement

def _ros_env(domain: int, profile: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_ENV_VARS}
    env.pop("ROS_LOCALHOST_ONLY", None)
    if profile:
        from clip_perception.ros.dds_profile import env_with_profile
        env = env_with_profile(env)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain)
    env["PYTHONUNBUFFERED"] = "1"
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    return env


def _last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no result line in output:\n{text}")


def measure(domain: int, publisher_profile: bool, workdir: Path) -> dict:
    """Frames a subscriber process receives from a publisher process (default subscriber QoS)."""
    topic = f"clip_perception_frames_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    stop_file = workdir / f"stop_{topic}"
    script = str(Path(__file__).resolve())
    # cwd=workdir: Fast DDS also loads ./DEFAULT_FASTRTPS_PROFILES.xml when present.
    sub = subprocess.Popen(
        [sys.executable, script, "sub", topic, "--frames", str(FRAMES), "--wait", "30",
         "--stop-file", str(stop_file)],
        env=_ros_env(domain, profile=False), cwd=workdir, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert sub.stdout is not None
        started, _, _ = select.select([sub.stdout], [], [], PROCESS_TIMEOUT_S)
        assert started, "subscriber did not start in time"
        ready = sub.stdout.readline()
        assert ready.strip() == "READY", f"subscriber did not start: {ready}"
        pub = subprocess.run(
            [sys.executable, script, "pub", topic, "--frames", str(FRAMES)],
            env=_ros_env(domain, profile=publisher_profile), cwd=workdir, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=PROCESS_TIMEOUT_S)
        assert pub.returncode == 0, f"publisher failed:\n{pub.stdout}"
        sent = _last_json(pub.stdout)["sent"]
        # The subscriber stops at FRAMES frames; else once the publisher is done.
        time.sleep(0.5)
        stop_file.touch()
        out, _ = sub.communicate(timeout=PROCESS_TIMEOUT_S)
        result = _last_json(out)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    return {"sent": sent, **result}


@pytest.fixture(scope="module")
def rclpy_available() -> None:
    pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(300)  # two publisher/subscriber process pairs, 40 s limit each step
def test_large_frames_arrive_with_profile(rclpy_available, tmp_path: Path,
                                          record_property) -> None:
    without = measure(DOMAIN_WITHOUT, publisher_profile=False, workdir=tmp_path)
    with_profile = measure(DOMAIN_WITH, publisher_profile=True, workdir=tmp_path)
    summary = (f"640x480 rgb8 best effort, publisher process -> subscriber process: "
               f"without profile {without['received']}/{without['sent']}, "
               f"with profile {with_profile['received']}/{with_profile['sent']} "
               f"({with_profile['intact']} intact)")
    print(summary)
    record_property("without_profile_received", without["received"])
    record_property("with_profile_received", with_profile["received"])
    # Documented, not asserted: without the profile the count depends on the Fast DDS
    # version, the machine and its load (0 to 6 of 10 with Jazzy's Fast DDS 2.14 here).
    assert with_profile["sent"] == FRAMES
    assert with_profile["received"] >= FRAMES - 1, summary  # one lost frame tolerated on busy CI
    assert with_profile["intact"] == with_profile["received"], summary


def test_profile_file_is_found_and_valid() -> None:
    import xml.etree.ElementTree as ET

    from clip_perception.ros.dds_profile import env_with_profile, large_frame_profile_path

    path = large_frame_profile_path()
    ns = {"p": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    root = ET.parse(path).getroot()
    shm = [d for d in root.iterfind(".//p:transport_descriptor", ns)
           if d.findtext("p:type", namespaces=ns) == "SHM"]
    assert shm and int(shm[0].findtext("p:segment_size", namespaces=ns)) >= 2 * 1920 * 1080 * 3
    types = {d.findtext("p:type", namespaces=ns)
             for d in root.iterfind(".//p:transport_descriptor", ns)}
    assert "UDPv4" in types  # other hosts keep working
    participant = root.find(".//p:participant", ns)
    assert participant is not None and participant.get("is_default_profile") == "true"
    # The names Fast DDS 2.x (Humble, Jazzy) and 3.x (Kilted on) read.
    assert PROFILE_ENV_VARS == ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
    env = env_with_profile({"KEEP": "1"})
    assert env == {"KEEP": "1", PROFILE_ENV_VARS[0]: path, PROFILE_ENV_VARS[1]: path}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role")
    pub_p = sub.add_parser("pub")
    pub_p.add_argument("topic")
    pub_p.add_argument("--frames", type=int, default=FRAMES)
    sub_p = sub.add_parser("sub")
    sub_p.add_argument("topic")
    sub_p.add_argument("--frames", type=int, default=FRAMES)
    sub_p.add_argument("--wait", type=float, default=30.0)
    sub_p.add_argument("--stop-file")
    args = parser.parse_args()
    if args.role == "pub":
        _publish(args.topic, args.frames)
    elif args.role == "sub":
        _subscribe(args.topic, args.frames, args.wait, args.stop_file)
    else:  # measure both, as the test does
        import tempfile
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        with tempfile.TemporaryDirectory() as tmp:
            for domain, profile in ((DOMAIN_WITHOUT, False), (DOMAIN_WITH, True)):
                result = measure(domain, profile, Path(tmp))
                print(f"publisher profile={profile}: {result}")


if __name__ == "__main__":
    main()
