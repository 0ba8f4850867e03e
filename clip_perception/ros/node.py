"""ROS 2 node: find the object a command names in the camera stream.

A thin lifecycle shell around :class:`~clip_perception.core.detector.Detector`:
it owns parameters, QoS and threads, converts messages and publishes.

* configure: load the model (a failure says how to fix it);
* activate: subscribe to ``image`` and ``command`` and start the worker;
* deactivate / cleanup: stop, and release the model.

By default the node configures and activates itself (``autostart``).
Three threads share the work: the executor converts images (a zero-copy view)
and handles commands and parameters; a worker runs inference on the newest
frame (a frame arriving while one is processed replaces the waiting one and is
counted as dropped, so latency never grows with the camera rate); a publisher
thread publishes each result while the worker starts on the next frame.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import Counter

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Bool, String

from ..core.command import CommandError, parse_command
from ..core.config import ConfigError
from ..core.detector import Detection, Detector
from ..core.drawing import annotate
from ..core.encoders import ModelLoadError, load_encoder
from ..core.image_formats import ImageFormatError
from ..core.latest_slot import LatestSlot
from ..core.log_throttle import ProblemLog
from ..core.timings import Timings
from .messages import (
    detection_array,
    frame_from_image,
    heatmap_image,
    region,
    rgb_image,
    vision_msgs,
)
from .parameters import DETECTOR_FIELDS, PARAMS, descriptor, detector_config

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
IMAGE_OUT = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)


COUNTERS = ("frames_received", "frames_processed", "frames_without_target", "frames_failed",
            "images_rejected", "results_superseded", "publish_failed", "commands_received",
            "commands_rejected")


def image_qos(reliability: str, depth: int) -> QoSProfile:
    """The image subscription's QoS: sensor-data style, best effort unless asked otherwise."""
    policies = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
                "reliable": ReliabilityPolicy.RELIABLE}
    if reliability not in policies:
        raise ValueError(f"image_reliability '{reliability}' must be best_effort or reliable")
    return QoSProfile(depth=depth, reliability=policies[reliability],
                      durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)


def _preview(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PerceptionNode(LifecycleNode):
    """Publishes whether the commanded object is in view, and where."""

    def __init__(self, node_name: str = "clip_perception", **kwargs):
        super().__init__(node_name, **kwargs)
        for param in PARAMS:
            self.declare_parameter(param.name, param.default, descriptor(param))
        self._values = {p.name: self.get_parameter(p.name).value for p in PARAMS}
        self.add_on_set_parameters_callback(self._on_set_parameters)

        log = self.get_logger()
        self.problems = ProblemLog(log.warning, period=5.0)
        self.command_problems = ProblemLog(log.warning, period=1.0)
        self.stats: Counter[str] = Counter({key: 0 for key in COUNTERS})
        self.detector: Detector | None = None
        self._slot: LatestSlot = LatestSlot()
        self._lock = threading.Lock()
        self._targets: tuple[str, ...] = ()
        self._pending: tuple[str, ...] | None = None
        self._found: dict[str, bool] = {}
        self._threads: list[threading.Thread] = []
        self._outbox: queue.Queue = queue.Queue()
        self._running = threading.Event()
        self._subs: list = []
        self._pubs: dict = {}
        self._timer = None
        self.timings = Timings()
        if self._values["target"]:
            try:
                self._set_targets(parse_command(self._values["target"]).targets, "parameter")
            except CommandError as exc:
                log.error(f"parameter target {self._values['target']!r} ignored: {exc}")

    @property
    def autostart(self) -> bool:
        return bool(self._values["autostart"])

    @property
    def targets(self) -> tuple[str, ...]:
        return self._targets

    # --- lifecycle ------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        v = self._values
        try:
            config = detector_config(v)
            image_qos(v["image_reliability"], v["image_qos_depth"])
        except (ConfigError, ValueError) as exc:
            log.error(f"invalid parameters: {exc}")
            return TransitionCallbackReturn.FAILURE
        log.info(f"loading model '{v['model']}' (device {v['device']}, precision {v['precision']})")
        try:
            encoder = load_encoder(v["model"], v["device"], v["precision"],
                                   v["model_download_root"] or None)
        except ModelLoadError as exc:
            log.error(str(exc))
            return TransitionCallbackReturn.FAILURE
        self.detector = Detector(encoder, config)
        with self._lock:
            self._pending = self._targets  # embedded by the worker once active
        self._pubs = {
            "detected": self.create_lifecycle_publisher(Bool, "detected", RELIABLE),
            "region": self.create_lifecycle_publisher(RegionOfInterest, "region", RELIABLE),
            "debug_image": self.create_lifecycle_publisher(Image, "debug_image", IMAGE_OUT),
            "heatmap": self.create_lifecycle_publisher(Image, "heatmap", IMAGE_OUT),
            "targets": self.create_lifecycle_publisher(String, "targets", LATCHED),
        }
        if vision_msgs is not None:
            self._pubs["detections"] = self.create_lifecycle_publisher(
                vision_msgs.Detection2DArray, "detections", RELIABLE)
        else:
            log.info("vision_msgs is not installed: the detections topic is disabled")
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = self.create_timer(v["diagnostics_period"], self._publish_diagnostics)
        device = self.detector.device
        log.info(f"model ready on {device}; input {self.detector.input_size}px, "
                 f"{len(self.detector.windows_for(640, 480))} coarse windows at 640x480, "
                 f"crop budget {config.crop_budget}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        v = self._values
        qos = image_qos(v["image_reliability"], v["image_qos_depth"])  # checked at configure
        self._subs = [
            self.create_subscription(Image, "image", self._on_image, qos),
            self.create_subscription(String, "command", self._on_command, RELIABLE),
        ]
        result = super().on_activate(state)
        self._start_worker()
        self._publish_targets()
        self.get_logger().info(
            f"active: image '{self.resolve_topic_name('image')}' ({v['image_reliability']}), "
            f"command '{self.resolve_topic_name('command')}'; "
            + (f"looking for {', '.join(self._targets)}" if self._targets
               else "waiting for a command"))
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self.destroy_publisher(self._diagnostics)
            self._timer = None
        self.detector = None

    # --- inputs (executor thread) ---------------------------------------------
    def _on_image(self, msg: Image) -> None:
        self.stats["frames_received"] += 1
        try:
            frame = frame_from_image(msg)
        except ImageFormatError as exc:
            self.stats["images_rejected"] += 1
            kind = f"image/{msg.encoding}/{msg.width}x{msg.height}/{msg.step}/{len(msg.data)}"
            self.problems.report(kind, f"skipping image from '{self.resolve_topic_name('image')}'"
                                       f": {exc}")
            return
        self._record_age("transport", msg.header)
        self._slot.put((msg.header, frame, time.perf_counter()))

    def _on_command(self, msg: String) -> None:
        self.stats["commands_received"] += 1
        try:
            command = parse_command(msg.data, self._values["max_command_length"])
        except CommandError as exc:
            self.stats["commands_rejected"] += 1
            still = ", ".join(self._targets) or "nothing"
            self.command_problems.report(
                f"command/{exc.kind}",
                f"ignored command {_preview(msg.data)!r}: {exc}; still looking for {still}")
            return
        self._set_targets(command.targets, f"command {_preview(msg.data)!r}")

    def _set_targets(self, targets: tuple[str, ...], source: str) -> None:
        with self._lock:
            self._targets = targets
            self._pending = targets
            self._found = {}
        if targets:
            self.get_logger().info(f"looking for {', '.join(targets)} (from {source})")
        else:
            self.get_logger().info(f"search stopped (from {source})")
        self._publish_targets()

    def _publish_targets(self) -> None:
        pub = self._pubs.get("targets")
        if pub is not None and self._running.is_set():
            pub.publish(String(data=", ".join(self._targets)))

    def _on_set_parameters(self, params) -> SetParametersResult:
        values = dict(self._values)
        values.update({p.name: p.value for p in params})
        changed = {p.name for p in params}
        targets = None
        if "target" in changed:
            text = values["target"]
            try:
                targets = parse_command(text, values["max_command_length"]).targets if text else ()
            except CommandError as exc:
                return SetParametersResult(successful=False, reason=f"target: {exc}")
        config = None
        if changed & set(DETECTOR_FIELDS):
            try:
                config = detector_config(values)
            except (ConfigError, TypeError, ValueError) as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        self._values = values
        if config is not None and self.detector is not None:
            self.detector.configure(config)
        if targets is not None and self.detector is not None:
            self._set_targets(targets, "parameter target")
        elif targets is not None:
            with self._lock:
                self._targets = self._pending = targets
        return SetParametersResult(successful=True)

    # --- worker thread ----------------------------------------------------------
    def _start_worker(self) -> None:
        """Start the inference thread and the publisher thread behind it."""
        self._slot.reopen()
        self._running.set()
        self._outbox = queue.Queue(maxsize=2)  # bounded: inference waits if publishing lags
        self._threads = [
            threading.Thread(target=self._work, name="clip_perception_worker", daemon=True),
            threading.Thread(target=self._publish_outbox, name="clip_perception_publisher",
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _stop_worker(self) -> None:
        """Finish the frame in flight, publish what is queued, and stop both threads."""
        self._running.clear()
        self._slot.close()
        if self._threads:
            worker, publisher = self._threads
            worker.join(timeout=30.0)
            self._outbox.put(None)
            publisher.join(timeout=30.0)
            self._threads = []

    def _work(self) -> None:
        while self._running.is_set():
            item = self._slot.take(timeout=0.2)
            self._apply_pending_targets()
            if item is not None and self.detector is not None:
                self._process(*item)

    def _process(self, header, frame, received: float) -> None:
        """Detect, then publish unless the target changed meanwhile; count the outcome."""
        targets = self.detector.targets
        if not targets:
            self.stats["frames_without_target"] += 1
            return
        want_heat = self._wanted("heatmap", "publish_heatmap")
        start = time.perf_counter()
        self.timings.add("wait", start - received)
        try:
            detection = self.detector.detect(frame, targets=targets, with_heatmap=want_heat)
        except Exception as exc:  # keep running whatever one frame does
            self.stats["frames_failed"] += 1
            self.problems.report("inference", f"inference failed on a {frame.width}x"
                                              f"{frame.height} frame, skipped: {exc!r}")
            return
        done = time.perf_counter()
        self.timings.add("processing", done - start)
        config = self.detector.config
        if config.refine and config.refine_stages and not detection.refined:
            self.problems.report(
                "budget", f"refine is on but the {len(detection.windows)} coarse windows of a "
                          f"{frame.width}x{frame.height} frame leave no room in crop_budget "
                          f"{self.detector.config.crop_budget} for a finer pass; raise "
                          "crop_budget or window_stride")
        if targets != self._targets:
            self.stats["results_superseded"] += 1  # the target changed meanwhile
            return
        # Publishing (drawing the debug image included) overlaps the next inference.
        self._outbox.put((header, frame, detection, want_heat))

    def _publish_outbox(self) -> None:
        """Publisher thread: publish each result in order, then count it."""
        while (item := self._outbox.get()) is not None:
            header, frame, detection, with_heat = item
            start = time.perf_counter()
            try:
                self._publish(header, frame, detection, with_heat)
            except Exception as exc:
                self.stats["publish_failed"] += 1
                self.problems.report("publish", f"publishing failed: {exc!r}")
                continue
            self.stats["frames_processed"] += 1
            self.timings.add("publish", time.perf_counter() - start)
            self._record_age("latency", header)

    def _record_age(self, stage: str, header) -> None:
        """Time since the frame's stamp, when the stamp is on this clock (not a replayed bag)."""
        age = self.get_clock().now().nanoseconds * 1e-9 - (
            header.stamp.sec + header.stamp.nanosec * 1e-9)
        if 0.0 <= age < 60.0:
            self.timings.add(stage, age)

    def _apply_pending_targets(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None and self.detector is not None:
            try:
                self.detector.set_targets(pending)
            except Exception as exc:
                self.problems.report("text", f"could not embed targets {pending}: {exc!r}")

    def _wanted(self, topic: str, flag: str) -> bool:
        pub = self._pubs.get(topic)
        return bool(self._values[flag]) and pub is not None and pub.get_subscription_count() > 0

    def _publish(self, header, frame, detection: Detection, with_heat: bool) -> None:
        pubs = self._pubs
        pubs["detected"].publish(Bool(data=detection.present))
        if detection.present:
            pubs["region"].publish(region(detection.targets[0]))
        if "detections" in pubs:
            pubs["detections"].publish(detection_array(detection, header))
        if self._wanted("debug_image", "publish_debug_image"):
            pubs["debug_image"].publish(rgb_image(annotate(frame.to_rgb(), detection), header))
        if with_heat and detection.heatmaps:
            pubs["heatmap"].publish(heatmap_image(detection, header))
        self._log_changes(detection)

    def _log_changes(self, detection: Detection) -> None:
        """Log when a target is found or lost, not on every frame."""
        for t in detection.targets:
            if self._found.get(t.phrase) == t.present:
                continue
            self._found[t.phrase] = t.present
            if t.present:
                x0, y0, x1, y1 = t.box
                self.get_logger().info(f"found {t.phrase} (score {t.score:.2f}) at x={x0} y={y0} "
                                       f"w={x1 - x0} h={y1 - y0}")
            else:
                self.get_logger().info(f"{t.phrase} not in view (best score {t.score:.2f})")

    # --- diagnostics ------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Every input the node saw, and what became of it."""
        counts = dict(self.stats)
        counts["frames_dropped"] = self._slot.dropped
        return counts

    def _publish_diagnostics(self) -> None:
        counts = self.counters()
        rejected = counts.get("images_rejected", 0) + counts.get("frames_failed", 0)
        status = DiagnosticStatus(
            name=f"{self.get_fully_qualified_name()}: pipeline",
            hardware_id=str(self.detector.device) if self.detector else "",
            level=DiagnosticStatus.WARN if rejected else DiagnosticStatus.OK,
            message=(f"looking for {', '.join(self._targets)}" if self._targets
                     else "no target"),
        )
        values = {**counts, **self.timings.summary(), "targets": ", ".join(self._targets),
                  "model": self._values["model"],
                  "device": str(self.detector.device) if self.detector else ""}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in sorted(values.items())]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(msg)

    def stop(self) -> None:
        """Stop the worker thread (used on shutdown)."""
        self._stop_worker()


def main(args: list[str] | None = None) -> int:
    """Run the node; exits 1 if the model cannot be loaded."""
    rclpy.init(args=args)
    node = PerceptionNode()
    code = 0
    try:
        if node.autostart:
            for transition in (node.trigger_configure, node.trigger_activate):
                if transition() != TransitionCallbackReturn.SUCCESS:
                    node.get_logger().fatal("could not start (see the error above); exiting")
                    code = 1
                    break
        if code == 0:
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
