"""Replay a rosbag2 bag into ROS 2 topics: ``python -m clip_perception.tools.bag_replay BAG``.

A small stand-in for ``ros2 bag play`` where the ros2 CLI is not installed
(pip-only setups, CI). Reads sqlite3 or mcap bags with ``rosbags`` and
publishes each message, deserialised by rclpy, at its recorded pace.
Header stamps are kept, so outputs carry the recorded times.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

QOS_DEPTH = 10
MATCH_SETTLE = 0.5  # seconds for discovery to finish on the subscriber's side too


def message_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> the rclpy message class."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class BagPlayer:
    """Publishes a bag's messages on ``node``, optionally remapping topics."""

    def __init__(self, node, bag: str | Path, remap: dict[str, str] | None = None,
                 rate: float = 1.0, clock: bool = False):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosbags.rosbag2 import Reader

        if rate <= 0:
            raise ValueError("rate must be positive")
        self.node = node
        self.rate = rate
        self.reader = Reader(Path(bag))
        self.reader.open()
        self.remap = remap or {}
        qos = QoSProfile(depth=QOS_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {}
        for conn in self.reader.connections:
            topic = self.remap.get(conn.topic, conn.topic)
            self.publishers[conn.id] = (node.create_publisher(message_class(conn.msgtype), topic,
                                                              qos), message_class(conn.msgtype))
        self.clock = None
        if clock:
            from rosgraph_msgs.msg import Clock

            self._clock_msg = Clock()
            self.clock = node.create_publisher(Clock, "/clock", QOS_DEPTH)

    def wait_for_subscribers(self, timeout: float) -> bool:
        """Wait until every topic has a subscriber (or ``timeout`` s pass).

        A publisher sees a subscriber before that subscriber has matched the
        publisher, and a message sent in between is lost; so this waits
        :data:`MATCH_SETTLE` seconds more once all are seen.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(pub.get_subscription_count() > 0 for pub, _ in self.publishers.values()):
                time.sleep(MATCH_SETTLE)
                return True
            time.sleep(0.05)
        return False

    def play(self, on_publish: Callable[[str, object], None] | None = None) -> int:
        """Publish every message at its recorded pace; returns how many were sent."""
        from rclpy.serialization import deserialize_message

        start_wall, start_bag, sent = time.monotonic(), None, 0
        for conn, stamp, raw in self.reader.messages():
            start_bag = stamp if start_bag is None else start_bag
            delay = (stamp - start_bag) / 1e9 / self.rate - (time.monotonic() - start_wall)
            if delay > 0:
                time.sleep(delay)
            publisher, cls = self.publishers[conn.id]
            msg = deserialize_message(bytes(raw), cls)
            if self.clock is not None:
                self._clock_msg.clock.sec, self._clock_msg.clock.nanosec = divmod(stamp, 10**9)
                self.clock.publish(self._clock_msg)
            publisher.publish(msg)
            sent += 1
            if on_publish is not None:
                on_publish(publisher.topic_name, msg)
        return sent

    def close(self) -> None:
        self.reader.close()


def _parse_remaps(items: Sequence[str]) -> dict[str, str]:
    remap = {}
    for item in items:
        old, sep, new = item.partition(":=")
        if not sep or not old or not new:
            raise SystemExit(f"--remap takes from:=to, got {item!r}")
        remap[old] = new
    return remap


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_perception.bag_replay",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", help="bag directory (sqlite3 or mcap)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO")
    parser.add_argument("--clock", action="store_true", help="publish /clock (use_sim_time)")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SEC",
                        help="wait up to SEC seconds for a subscriber on every topic")
    args = parser.parse_args(argv)

    from ..ros.dds_profile import env_with_profile

    os.environ.update(env_with_profile(dict(os.environ)))  # large frames over shared memory
    import rclpy

    rclpy.init()
    node = rclpy.create_node("bag_replay")
    try:
        player = BagPlayer(node, args.bag, _parse_remaps(args.remap), args.rate, args.clock)
        if args.wait_for_subscribers and not player.wait_for_subscribers(
                args.wait_for_subscribers):
            node.get_logger().warning("not every topic has a subscriber; playing anyway")
        sent = player.play()
        node.get_logger().info(f"published {sent} messages from {args.bag}")
        player.close()
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
