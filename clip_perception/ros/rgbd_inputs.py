"""Camera inputs beyond raw colour: compressed colour, and optional depth + camera_info.

:class:`RgbdCameraInput` has :class:`~clip_perception.ros.inputs.CameraInput`'s
shape (``subscribe``, ``unsubscribe``, ``counts``) and hands the sink an
:class:`~clip_perception.core.spatial.locate3d.RgbdFrame`:

* ``transport="raw"`` subscribes ``image`` (sensor_msgs/Image);
  ``"compressed"`` subscribes ``image/compressed`` (sensor_msgs/CompressedImage,
  jpeg or png), image_transport's naming. A corrupt or truncated payload is
  counted (``images_rejected``) and throttled-logged; the node goes on.
* ``use_depth`` also subscribes ``depth`` (16UC1 mm or 32FC1 m, registered to
  colour) and ``camera_info``; each colour frame is paired with the depth
  frame nearest in stamp within ``tolerance`` s (message_filters where
  installed). A colour frame without a match still goes on, with the reason.
  The intrinsics are looked up at publish time (:meth:`camera_state`).

Compressed colour is decoded on the inference worker, only for the frames it
takes (a :class:`~clip_perception.core.runtime.inference_loop.PendingFrame`);
depth images are converted on the executor when a pair is made.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..core.io.compressed import CompressedImageError
from ..core.io.image_formats import ImageFormatError
from ..core.runtime.inference_loop import PendingFrame
from ..core.runtime.log_throttle import ProblemLog
from ..core.spatial.camera_model import CameraModelError
from ..core.spatial.depth import DepthFormatError
from ..core.spatial.locate3d import (
    REASON_CAMERA_INFO,
    REASON_DEPTH_FORMAT,
    REASON_NO_DEPTH,
    DepthInvalid,
    RgbdFrame,
)
from .depth_pairing import make_pairer
from .messages import frame_from_image, stamp_ns
from .spatial_messages import camera_from_info, depth_from_image, frame_from_compressed

TRANSPORTS = ("raw", "compressed")


@dataclass(frozen=True)
class _Received:
    """A colour message and its receive time; has ``header`` for message_filters."""

    msg: object
    received: float

    @property
    def header(self):
        return self.msg.header
POLL_PERIOD = 0.05


def colour_topic(transport: str, base: str = "image") -> str:
    """image_transport's topic for ``transport``: ``image`` or ``image/compressed``."""
    if transport not in TRANSPORTS:
        raise ValueError(f"image_transport '{transport}' must be raw or compressed")
    return base if transport == "raw" else f"{base}/compressed"


class RgbdCameraInput:
    """One camera: colour (raw or compressed), optionally depth and camera_info."""

    def __init__(self, node, sink: Callable, problems: ProblemLog, *,
                 transport: str = "raw", use_depth: bool = False, tolerance: float = 0.05,
                 on_reject: Callable[[], None] = lambda: None,
                 on_frame: Callable[[object], None] = lambda header: None,
                 prefix: str = "", pairer_factory=make_pairer):
        self.node = node
        self.transport = transport
        self.use_depth = use_depth
        self.tolerance = tolerance
        self.topic = prefix + colour_topic(transport)
        self.depth_topic = prefix + "depth"
        self.info_topic = prefix + "camera_info"
        self._sink = sink
        self._problems = problems
        self._on_reject = on_reject
        self._on_frame = on_frame
        self._pairer_factory = pairer_factory
        self.counts: Counter[str] = Counter(frames_received=0, images_rejected=0)
        if use_depth:
            self.counts.update(depth_received=0, depth_rejected=0, camera_info_rejected=0,
                               frames_paired=0, frames_unpaired=0)
        self._subs: list = []
        self._resolved_topic = self.topic
        self._timer = None
        self._pairer = None
        self._camera = None
        self._camera_problem: DepthInvalid | None = None

    # --- subscriptions ----------------------------------------------------------------
    def subscribe(self, qos: QoSProfile) -> None:
        node = self.node
        cls = Image if self.transport == "raw" else CompressedImage
        self._resolved_topic = node.resolve_topic_name(self.topic)
        self._subs = [node.create_subscription(cls, self.topic, self.on_colour, qos)]
        if self.use_depth:
            self._pairer = self._pairer_factory(self._on_pair, int(self.tolerance * 1e9))
            self._subs += [
                node.create_subscription(Image, self.depth_topic, self.on_depth, qos),
                node.create_subscription(CameraInfo, self.info_topic, self.on_camera_info, qos),
            ]
            self._timer = node.create_timer(POLL_PERIOD, self._pairer.poll)

    def unsubscribe(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs = []
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None
        self._pairer = None

    # --- callbacks (executor thread) --------------------------------------------------
    def on_colour(self, msg) -> None:
        self.counts["frames_received"] += 1
        received = time.perf_counter()
        if self._pairer is not None:
            self._pairer.add_colour(stamp_ns(msg.header), _Received(msg, received))
        else:
            self._deliver(msg, received, None, None)

    def on_depth(self, msg: Image) -> None:
        self.counts["depth_received"] += 1
        if self._pairer is not None:
            self._pairer.add_depth(stamp_ns(msg.header), msg)

    def on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self._camera, self._camera_problem = camera_from_info(msg), None
        except CameraModelError as exc:
            self.counts["camera_info_rejected"] += 1
            self._camera, self._camera_problem = None, DepthInvalid(REASON_CAMERA_INFO, str(exc))
            self._problems.report("camera_info", f"camera_info on "
                                  f"'{self.node.resolve_topic_name(self.info_topic)}' "
                                  f"is unusable, no 3D output: {exc}")

    def _on_pair(self, colour: _Received, depth_msg) -> None:
        msg, received = colour.msg, colour.received
        if depth_msg is None:
            self.counts["frames_unpaired"] += 1
            missing = DepthInvalid(REASON_NO_DEPTH, f"no depth frame within "
                                                    f"{self.tolerance * 1000:.0f} ms of the "
                                                    "colour frame's stamp")
            self._deliver(msg, received, None, missing)
            return
        self.counts["frames_paired"] += 1
        try:
            depth, missing = depth_from_image(depth_msg), None
        except DepthFormatError as exc:
            self.counts["depth_rejected"] += 1
            depth, missing = None, DepthInvalid(REASON_DEPTH_FORMAT, str(exc))
        self._deliver(msg, received, depth, missing)

    def _deliver(self, msg, received: float, depth, missing) -> None:
        if self.transport == "compressed":  # decoded by the worker, if it takes the frame
            self._on_frame(msg.header)
            self._sink(msg.header, PendingFrame(
                lambda: RgbdFrame.wrap(frame_from_compressed(msg), depth, None, missing),
                (CompressedImageError,), lambda exc: self._reject(msg, exc)), received)
            return
        try:
            frame = frame_from_image(msg)
        except ImageFormatError as exc:
            self._reject(msg, exc)
            return
        self._on_frame(msg.header)
        self._sink(msg.header, RgbdFrame.wrap(frame, depth, None, missing), received)

    def _reject(self, msg, exc: BaseException) -> None:
        """Count and report an image that cannot be used. A compressed image is
        rejected on the worker's thread: only that thread counts those, the problem
        log takes a lock, and the topic name was resolved when subscribing."""
        self.counts["images_rejected"] += 1
        self._on_reject()
        kind = (f"image/{msg.encoding}/{msg.width}x{msg.height}" if self.transport == "raw"
                else f"compressed/{msg.format}/{type(exc).__name__}")
        self._problems.report(kind, f"skipping image from '{self._resolved_topic}': {exc}")

    def camera_state(self):
        """The latest camera_info as ``(PinholeCamera or None, DepthInvalid or None)``.

        Read when a result is published rather than when the frame arrives, so a
        frame that overtook the first camera_info still gets a 3D position
        (intrinsics do not change while a driver runs)."""
        return self._camera, self._camera_problem
