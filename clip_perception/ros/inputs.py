"""The node's inputs for one camera: the image subscription and its conversion.

:class:`CameraInput` subscribes at activate, converts each message to a
zero-copy :class:`~clip_perception.core.io.image_formats.Frame`, counts and
reports malformed ones, and hands good frames to ``sink(header, frame, received)``.
Other encodings (compressed, depth) are other input classes with the same shape.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ..core.io.image_formats import ImageFormatError
from ..core.runtime.log_throttle import ProblemLog
from .messages import frame_from_image


def image_qos(reliability: str, depth: int) -> QoSProfile:
    """The image subscription's QoS: sensor-data style, best effort unless asked otherwise."""
    policies = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
                "reliable": ReliabilityPolicy.RELIABLE}
    if reliability not in policies:
        raise ValueError(f"image_reliability '{reliability}' must be best_effort or reliable")
    return QoSProfile(depth=depth, reliability=policies[reliability],
                      durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)


class CameraInput:
    """One camera's image subscription (created by :meth:`subscribe`)."""

    def __init__(self, node, sink: Callable, problems: ProblemLog,
                 on_reject: Callable[[], None] = lambda: None,
                 on_frame: Callable[[object], None] = lambda header: None,
                 topic: str = "image"):
        self.node = node
        self.topic = topic
        self._sink = sink
        self._problems = problems
        self._on_reject = on_reject
        self._on_frame = on_frame
        self.counts: Counter[str] = Counter(frames_received=0, images_rejected=0)
        self._sub = None

    def subscribe(self, qos: QoSProfile) -> None:
        self._sub = self.node.create_subscription(Image, self.topic, self.on_image, qos)

    def unsubscribe(self) -> None:
        if self._sub is not None:
            self.node.destroy_subscription(self._sub)
            self._sub = None

    def on_image(self, msg: Image) -> None:
        self.counts["frames_received"] += 1
        received = time.perf_counter()
        try:
            frame = frame_from_image(msg)
        except ImageFormatError as exc:
            self.counts["images_rejected"] += 1
            self._on_reject()
            kind = f"image/{msg.encoding}/{msg.width}x{msg.height}/{msg.step}/{len(msg.data)}"
            self._problems.report(kind, f"skipping image from "
                                        f"'{self.node.resolve_topic_name(self.topic)}': {exc}")
            return
        self._on_frame(msg.header)
        self._sink(msg.header, frame, received)
