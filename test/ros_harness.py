"""Test harness for the node over real DDS: a node process and a probe node.

Every process gets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and the test's
own ROS_DOMAIN_ID, so discovery never leaves loopback. Frames are published
with the package's Fast DDS profile (large shared-memory segment).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from clip_perception.tools import node_process
from clip_perception.tools.bag_replay import MATCH_SETTLE
from clip_perception.tools.node_process import local_ros_env

REPO = Path(__file__).resolve().parents[1]
TEST_DIR = Path(__file__).resolve().parent
COLOR_MODEL = "clip_perception.testing.color_encoder:factory"
SLOW_MODEL = "slow_encoder:factory"  # test/slow_encoder.py
# detected follows each single frame (stable after 1 of 1, off after 1 miss): the tests
# that send one scene and check detected; the tracking tests pass the node's defaults
PER_FRAME = {"stable_k": 1, "stable_n": 1, "stable_m": 1}


def ros_env(domain: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a ROS process of this test: loopback only, own domain."""
    env = local_ros_env(domain)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), str(TEST_DIR), env.get("PYTHONPATH", "")) if p)
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    env.update(extra or {})
    return env


class NodeProcess(node_process.NodeProcess):
    """The node in its own process, with the colour encoder unless ``params`` say otherwise."""

    def __init__(self, domain: int, log_path: Path, params: dict[str, object] | None = None,
                 env: dict[str, str] | None = None, remaps: dict[str, str] | None = None):
        super().__init__(ros_env(domain, env), log_path,
                         {"model": COLOR_MODEL, **PER_FRAME, **(params or {})}, remaps, cwd=REPO)


class Probe:
    """A test-side node in its own rclpy context: publishes inputs, records outputs."""

    def __init__(self, domain: int, namespace: str = "/"):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, RegionOfInterest
        from std_msgs.msg import Bool, String

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("probe", namespace=namespace, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = defaultdict(list)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        for topic, cls, qos in (("detected", Bool, reliable),
                                ("region", RegionOfInterest, reliable),
                                ("debug_image", Image, reliable), ("heatmap", Image, reliable),
                                ("targets", String, latched),
                                ("/diagnostics", DiagnosticArray, reliable)):
            self.node.create_subscription(cls, topic, self._recorder(topic), qos)
        self.image_pub = self.node.create_publisher(
            Image, "image", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        self._reliable = reliable
        self.command_pub = self.node.create_publisher(String, "command", reliable)
        self._Image, self._String = Image, String

    def _recorder(self, topic: str) -> Callable:
        def record(msg) -> None:
            self.received[topic].append((time.monotonic(), msg))
        return record

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def spin_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def wait_for_node(self, timeout: float = 30.0) -> bool:
        """Until the node's command and image subscriptions are matched on both sides
        (a publisher sees a subscriber before the subscriber has matched it)."""
        matched = self.spin_until(lambda: self.command_pub.get_subscription_count() > 0
                                  and self.image_pub.get_subscription_count() > 0, timeout)
        if matched:
            self.spin(MATCH_SETTLE)
        return matched

    def latest(self, topic: str):
        return self.received[topic][-1][1] if self.received[topic] else None

    def targets(self) -> str | None:
        msg = self.latest("targets")
        return None if msg is None else msg.data

    def command(self, text: str, expect_targets: str | None = None, timeout: float = 10.0) -> bool:
        """Publish a command; if ``expect_targets`` is given, wait until the node says so."""
        self.command_pub.publish(self._String(data=text))
        if expect_targets is None:
            return True
        return self.spin_until(lambda: self.targets() == expect_targets, timeout)

    def image(self, rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera",
              encoding: str = "rgb8") -> None:
        msg = self.make_image(rgb, stamp_ns, frame_id, encoding)
        self.image_pub.publish(msg)

    def make_image(self, rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera",
                   encoding: str = "rgb8"):
        h, w = rgb.shape[:2]
        channels = 1 if rgb.ndim == 2 else rgb.shape[2]
        msg = self._Image(height=h, width=w, encoding=encoding, is_bigendian=0,
                          step=w * channels, data=np.ascontiguousarray(rgb).tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 10**9)
        msg.header.frame_id = frame_id
        return msg

    def counters(self) -> dict[str, str]:
        """The node's counters from its latest /diagnostics message."""
        msg = self.latest("/diagnostics")
        if msg is None or not msg.status:
            return {}
        return {kv.key: kv.value for kv in msg.status[0].values}

    # --- RGB-D inputs and 3D outputs (image_transport compressed, use_depth) -----------
    def enable_rgbd(self) -> None:
        """Publishers for image/compressed, depth and camera_info; recorders for result,
        target_pose and markers."""
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        from std_msgs.msg import String
        from visualization_msgs.msg import MarkerArray

        for topic, cls in (("result", String), ("target_pose", PoseWithCovarianceStamped),
                           ("markers", MarkerArray)):
            self.node.create_subscription(cls, topic, self._recorder(topic), self._reliable)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.compressed_pub = self.node.create_publisher(CompressedImage, "image/compressed", qos)
        self.depth_pub = self.node.create_publisher(Image, "depth", qos)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", qos)
        self._CompressedImage, self._CameraInfo = CompressedImage, CameraInfo

    def wait_for_rgbd_node(self, timeout: float = 30.0) -> bool:
        pubs = (self.command_pub, self.compressed_pub, self.depth_pub, self.info_pub)
        matched = self.spin_until(lambda: all(p.get_subscription_count() > 0 for p in pubs),
                                  timeout)
        if matched:
            self.spin(MATCH_SETTLE)
        return matched

    def _stamp(self, msg, stamp_ns: int, frame_id: str):
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 10**9)
        msg.header.frame_id = frame_id
        return msg

    def compressed(self, data: bytes, stamp_ns: int, fmt: str = "jpeg",
                   frame_id: str = "camera_color_optical_frame") -> None:
        msg = self._CompressedImage(format=fmt, data=bytes(data))
        self.compressed_pub.publish(self._stamp(msg, stamp_ns, frame_id))

    def depth(self, metres: np.ndarray, stamp_ns: int, encoding: str = "16UC1",
              frame_id: str = "camera_color_optical_frame") -> None:
        from clip_perception.core.spatial.depth import encode_depth

        data, step = encode_depth(metres, encoding)
        h, w = metres.shape
        msg = self._Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=step,
                          data=data)
        self.depth_pub.publish(self._stamp(msg, stamp_ns, frame_id))

    def camera_info(self, camera, stamp_ns: int,
                    frame_id: str = "camera_color_optical_frame") -> None:
        msg = self._CameraInfo(width=camera.width, height=camera.height,
                               distortion_model="plumb_bob")
        msg.k = [camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]
        self.info_pub.publish(self._stamp(msg, stamp_ns, frame_id))

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
