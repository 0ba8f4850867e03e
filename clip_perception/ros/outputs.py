"""The node's outputs for one camera: lifecycle publishers and result publishing.

:class:`Outputs` creates the publishers at configure, turns a
:class:`~clip_perception.core.runtime.inference_loop.Result` into messages (on the
loop's publisher thread) and destroys them at cleanup. Another output (3D
points, a second camera's topics) is another method or another instance.
"""

from __future__ import annotations

from dataclasses import replace

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Bool, String

from ..core.runtime.inference_loop import Result
from .drawing import annotate
from .messages import detection_array, heatmap_image, region, rgb_image, vision_msgs

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
IMAGE_OUT = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)


class Outputs:
    """Publishers of one camera's results; ``values`` are the node's live parameters."""

    def __init__(self, node, values: dict, prefix: str = "",
                 targets_topic: str | None = "targets"):
        """``targets_topic``: the latched targets topic (not prefixed; shared by the
        cameras of a node), None for a camera that leaves it to another."""
        self.node = node
        self.values = values
        pub = node.create_lifecycle_publisher
        self.pubs = {
            "detected": pub(Bool, prefix + "detected", RELIABLE),
            "region": pub(RegionOfInterest, prefix + "region", RELIABLE),
            "debug_image": pub(Image, prefix + "debug_image", IMAGE_OUT),
            "heatmap": pub(Image, prefix + "heatmap", IMAGE_OUT),
        }
        if targets_topic is not None:
            self.pubs["targets"] = pub(String, targets_topic, LATCHED)
        if vision_msgs is not None:
            self.pubs["detections"] = pub(vision_msgs.Detection2DArray, prefix + "detections",
                                          RELIABLE)

    def wanted(self, topic: str, flag: str) -> bool:
        """Whether ``topic`` is switched on by parameter ``flag`` and someone listens."""
        pub = self.pubs.get(topic)
        return bool(self.values[flag]) and pub is not None and pub.get_subscription_count() > 0

    def want_heatmap(self) -> bool:
        return self.wanted("heatmap", "publish_heatmap")

    def publish_targets(self, phrases: tuple[str, ...]) -> None:
        if "targets" in self.pubs:
            self.pubs["targets"].publish(String(data=", ".join(phrases)))

    def publish(self, result: Result) -> None:
        """Every output of one result, stamped with its frame's header. With tracks,
        ``detected`` is every target's ``stable`` and ``region`` the first target's
        box (its track's while it is not found in this frame)."""
        pubs, detection, header = self.pubs, result.detection, result.header
        detected, first = tracked_region(result)
        pubs["detected"].publish(Bool(data=detected))
        if first is not None:
            pubs["region"].publish(first)
        if "detections" in pubs:
            pubs["detections"].publish(detection_array(detection, header,
                                                       ids=track_ids(result)))
        if self.wanted("debug_image", "publish_debug_image"):
            pubs["debug_image"].publish(rgb_image(annotate(result.frame.to_rgb(), detection),
                                                  header))
        if result.with_heatmap and detection.heatmaps and self.want_heatmap():
            pubs["heatmap"].publish(heatmap_image(detection, header))
        self._log_changes(result)

    def _log_changes(self, result: Result) -> None:
        """Log when a target is found or lost (the loop says which changed)."""
        log = self.node.get_logger()
        for t in result.changes:
            if t.present:
                x0, y0, x1, y1 = t.box
                log.info(f"found {t.phrase} (score {t.score:.2f}) at x={x0} y={y0} "
                         f"w={x1 - x0} h={y1 - y0}")
            else:
                log.info(f"{t.phrase} not in view (best score {t.score:.2f})")

    def destroy(self) -> None:
        for pub in self.pubs.values():
            self.node.destroy_lifecycle_publisher(pub)
        self.pubs = {}


def track_ids(result: Result) -> list[str | None] | None:
    """Per target of ``result``, its track id (None: untracked)."""
    if result.tracks is None:
        return None
    ids = {t.phrase: t.track.id if t.track else None for t in result.tracks.targets}
    return [ids.get(t.phrase) for t in result.detection.targets]


def tracked_region(result: Result):
    """``(detected, region of the first target or None)``: per frame without tracks;
    with tracks, ``stable`` and the first target's box, or its track's box."""
    detection = result.detection
    if result.tracks is None:
        return detection.present, region(detection.targets[0]) if detection.present else None
    states = result.tracks.targets
    detected = bool(states) and all(t.stable for t in states)
    if not detected:
        return False, None
    first = detection.targets[0]
    if first.present:
        return True, region(first)
    track = states[0].track
    return True, region(replace(first, box=track.box)) if track is not None else None
