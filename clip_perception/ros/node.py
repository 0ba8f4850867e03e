"""ROS 2 node: find the object a command names in the camera stream.

A thin lifecycle shell: parameters, QoS, subscriptions and publishers around
:class:`~clip_perception.core.runtime.inference_loop.InferenceLoop`, which owns the
threads (newest-frame slot, worker, publisher hand-off), the versioned
targets and the health reported on ``/diagnostics``.

* configure: load the model (a failure says how to fix it);
* activate: subscribe to ``image`` and ``command`` and start the loop;
* deactivate: stop the loop (the slot is cleared: no frame from before
  survives) and unsubscribe; cleanup: release the model.

Parameter ``cameras`` names several cameras served by one model: camera
``c`` reads ``c/image`` (``c/depth``, ``c/camera_info``) and publishes
``c/detected``, ``c/region``, ... ; ``command`` and ``targets`` stay shared.
The default ``[""]`` is one unnamed camera on today's topics.

By default the node configures and activates itself (``autostart``). A
command sets the ``target`` parameter, so ``ros2 param get`` shows what the
node looks for; parameter side effects run after the values are set.

A new target's text is embedded off the executor
(:class:`~clip_perception.core.runtime.target_updates.BackgroundUpdates`): a
command is accepted at once, the ``targets`` topic says when the new target is
live, and one that cannot be embedded is refused afterwards (logged, counted,
the old target stays and ``target`` is set back to it). Detector settings
change on the same thread, after the targets before them.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from functools import partial

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from std_msgs.msg import String

from ..core.detect.config import ConfigError
from ..core.detect.detector import Detector
from ..core.encoder import ModelLoadError, ModelUnreachableError
from ..core.io.command import CommandError, parse_command
from ..core.model.loading import load_encoder
from ..core.remote.triton_detector import make_detector
from ..core.runtime.health import Health
from ..core.runtime.inference_loop import InferenceLoop, Result
from ..core.runtime.log_throttle import ProblemLog
from ..core.runtime.memory import configure_allocator, malloc_trim, release_memory
from ..core.runtime.target_updates import BackgroundUpdates
from ..core.track.tracking_stage import TrackingStage
from . import param_hooks
from .diagnostics import Diagnostics
from .inputs import CameraInput, image_qos
from .messages import stamp_ns
from .outputs import RELIABLE, Outputs
from .parameters import (
    DETECTOR_FIELDS,
    PARAMS,
    TRACKING_FIELDS,
    camera_names,
    depth_range,
    descriptor,
    detector_config,
    tracking_config,
)
from .rgbd_inputs import RgbdCameraInput
from .spatial_outputs import SpatialOutputs

__all__ = ["PerceptionNode", "image_qos", "main"]

HEALTH_WINDOW_PERIODS = 10  # the health window, in diagnostics periods


@dataclass
class Camera:
    """One camera's input and (between configure and cleanup) outputs."""

    name: str
    input: CameraInput | RgbdCameraInput
    outputs: Outputs | None = None
    spatial: SpatialOutputs | None = None

    @property
    def prefix(self) -> str:
        return f"{self.name}/" if self.name else ""


def _preview(text: str, limit: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PerceptionNode(LifecycleNode):
    """Publishes whether the commanded object is in view, and where."""

    def __init__(self, node_name: str = "clip_perception", *, post_set: bool | None = None,
                 **kwargs):
        super().__init__(node_name, **kwargs)
        for param in PARAMS:
            self.declare_parameter(param.name, param.default, descriptor(param))
        self._values = {p.name: self.get_parameter(p.name).value for p in PARAMS}
        self.parameter_hooks = param_hooks.install(self, self._validate_parameters,
                                                   self._apply_parameters, post_set)
        log = self.get_logger()
        self.problems = ProblemLog(log.warning, period=5.0)
        self.command_problems = ProblemLog(log.warning, period=1.0)
        self.command_counts: Counter[str] = Counter(commands_received=0, commands_rejected=0)
        period = self._values["diagnostics_period"]
        self._camera_error: str | None = None
        try:
            names = camera_names(self._values)
        except ValueError as exc:  # reported at configure, which fails
            self._camera_error, names = str(exc), ("",)
        try:
            tracking = tracking_config(self._values)
        except ValueError:  # reported at configure, which fails
            tracking = None
        self.tracking = TrackingStage(lambda header: stamp_ns(header) * 1e-9,
                                      *(() if tracking is None else (tracking,)),
                                      camera_state=self._camera_state)
        self.loop = InferenceLoop(
            self._publish_result, report=lambda kind, message: self.problems.report(kind, message),
            want_heatmap=lambda: any(  # use_depth: heatmaps weight the 3D positions
                c.outputs is not None and (c.outputs.want_heatmap() or self._values["use_depth"])
                for c in self.cameras.values()),
            health=Health(window=HEALTH_WINDOW_PERIODS * period,
                          no_frames_after=self._values["no_frames_timeout"] or None),
            cameras=names, tracking=self.tracking)
        v = self._values
        self.cameras: dict[str, Camera] = {}
        for name in names:
            prefix = f"{name}/" if name else ""
            camera_kwargs = dict(on_reject=lambda: self.loop.record_error("image"),
                                 on_frame=lambda header: self._record_age("transport", header))
            sink = partial(self.loop.submit, camera=name)
            if v["image_transport"] == "raw" and not v["use_depth"]:
                camera_input = CameraInput(self, sink, self.problems, topic=prefix + "image",
                                           **camera_kwargs)
            else:  # compressed colour and/or depth + camera_info: ros/rgbd_inputs.py
                camera_input = RgbdCameraInput(
                    self, sink, self.problems, transport=v["image_transport"],
                    use_depth=v["use_depth"], tolerance=v["depth_sync_tolerance"],
                    prefix=prefix, **camera_kwargs)
            self.cameras[name] = Camera(name, camera_input)
        self.diagnostics: Diagnostics | None = None
        self._command_sub = None
        self._command_source: tuple[str, str] | None = None
        self.updates = BackgroundUpdates(
            report=lambda kind, message: self.problems.report(f"update/{kind}", message))
        self._reverting = threading.local()  # set while the update thread resets `target`
        self._live_text = ""  # the `target` text of the targets in force
        if self._values["target"]:
            try:
                self._switch_targets(parse_command(self._values["target"]).targets, "parameter",
                                     self._values["target"])
            except CommandError as exc:
                log.error(f"parameter target {self._values['target']!r} ignored: {exc}")

    @property
    def camera(self) -> CameraInput | RgbdCameraInput:
        """The first camera's input (the only one by default)."""
        return next(iter(self.cameras.values())).input

    @property
    def outputs(self) -> Outputs | None:
        """The first camera's outputs (they carry the shared targets topic)."""
        return next(iter(self.cameras.values())).outputs

    @property
    def spatial(self) -> SpatialOutputs | None:
        return next(iter(self.cameras.values())).spatial

    @property
    def autostart(self) -> bool:
        return bool(self._values["autostart"])

    @property
    def targets(self) -> tuple[str, ...]:
        return self.loop.targets.phrases

    @property
    def detector(self) -> Detector | None:
        return self.loop.detector

    @property
    def timings(self):
        return self.loop.timings

    # --- lifecycle ------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and make the outputs; any error is logged and fails the
        transition (rclpy would swallow an exception raised here without a word)."""
        try:
            return self._configure()
        except Exception as exc:
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            try:
                self._release()
            except Exception as cleanup:  # what was made before the error is released
                self.get_logger().error(f"releasing after the failed configure failed: "
                                        f"{type(cleanup).__name__}: {cleanup}")
            return TransitionCallbackReturn.FAILURE

    def _configure(self) -> TransitionCallbackReturn:
        log = self.get_logger()
        v = self._values
        if self._camera_error is not None:
            log.error(f"invalid parameter cameras {list(v['cameras'])}: {self._camera_error}")
            return TransitionCallbackReturn.FAILURE
        try:
            config = detector_config(v)
            image_qos(v["image_reliability"], v["image_qos_depth"])
            depth_range(v)
            self.tracking.configure(tracking_config(v))
        except (ConfigError, ValueError) as exc:
            log.error(f"invalid parameters: {exc}")
            return TransitionCallbackReturn.FAILURE
        log.info(f"loading model '{v['model']}' (device {v['device']}, precision {v['precision']})")
        try:
            encoder = load_encoder(v["model"], v["device"], v["precision"],
                                   v["model_download_root"] or None)
        except ModelUnreachableError as exc:  # a server not up yet: keep trying, run anyway
            log.error(f"{exc}; the node runs on, reports ERROR in /diagnostics and loads "
                      "the model as soon as its server answers")
            self.loop.load_when_ready(self._make_detector, on_ready=self._model_ready)
            encoder = None
        except ModelLoadError as exc:
            log.error(str(exc))
            return TransitionCallbackReturn.FAILURE
        if encoder is not None:
            self.loop.load(make_detector(encoder, config))
        for i, camera in enumerate(self.cameras.values()):
            camera.outputs = Outputs(self, self._values, camera.prefix,
                                     targets_topic="targets" if i == 0 else None)
            camera.spatial = SpatialOutputs(
                self, self._values, self.problems, v["use_depth"],
                getattr(camera.input, "camera_state", lambda: (None, None)), camera.prefix)
        if "detections" not in self.outputs.pubs:
            log.info("vision_msgs is not installed: the detections topic is disabled")
        if self.diagnostics is None:  # kept for the node's life (diagnostic_updater declares
            self.diagnostics = Diagnostics(self, self._diagnostic_figures,  # a parameter)
                                           v["diagnostics_period"])
        if len(self.cameras) > 1 or "" not in self.cameras:
            log.info(f"{len(self.cameras)} cameras share the model: {', '.join(self.cameras)}")
        if encoder is not None:
            self._model_ready(self.loop.detector)
        return TransitionCallbackReturn.SUCCESS

    def _camera_state(self, name: str):
        """A camera's intrinsics (or None) and why not, for the tracking stage."""
        camera = getattr(self, "cameras", {}).get(name)
        state = getattr(camera.input, "camera_state", None) if camera is not None else None
        return state() if state is not None else (None, None)

    def _make_detector(self) -> Detector:
        """A detector for the current parameters (the model loader's thread)."""
        v = self._values
        encoder = load_encoder(v["model"], v["device"], v["precision"],
                               v["model_download_root"] or None)
        return make_detector(encoder, detector_config(v))

    def _model_ready(self, detector: Detector) -> None:
        self.get_logger().info(
            f"model ready on {detector.device}; input {detector.input_size}px, "
            f"{len(detector.windows_for(640, 480))} coarse windows at 640x480, "
            f"crop budget {detector.config.crop_budget}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        v = self._values
        for camera in self.cameras.values():
            camera.input.subscribe(image_qos(v["image_reliability"], v["image_qos_depth"]))
        self._command_sub = self.create_subscription(String, "command", self._on_command,
                                                     RELIABLE)
        result = super().on_activate(state)
        self.loop.start()
        self.outputs.publish_targets(self.targets)
        self.get_logger().info(
            "active: image " + ", ".join(f"'{self.resolve_topic_name(c.input.topic)}'"
                                         for c in self.cameras.values()) + " "
            f"({v['image_reliability']}), "
            f"command '{self.resolve_topic_name('command')}'; "
            + (f"looking for {', '.join(self.targets)}" if self.targets
               else "waiting for a command"))
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.loop.stop()
        for camera in self.cameras.values():
            camera.input.unsubscribe()
        if self._command_sub is not None:
            self.destroy_subscription(self._command_sub)
            self._command_sub = None
        malloc_trim()  # the frames and results of the active period are free now
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.updates.close()
        self.loop.stop()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        for camera in self.cameras.values():
            if camera.outputs is not None:
                camera.outputs.destroy()
                camera.outputs = None
            if camera.spatial is not None:
                camera.spatial.destroy()
                camera.spatial = None
        if not self.loop.release(after=release_memory):
            self.get_logger().warning("a frame is still being processed: the model is "
                                      "released when it finishes")

    # --- commands and parameters (executor thread) ----------------------------
    def _on_command(self, msg: String) -> None:
        self.command_counts["commands_received"] += 1
        try:
            parse_command(msg.data, self._values["max_command_length"])
        except CommandError as exc:
            self.command_counts["commands_rejected"] += 1
            still = ", ".join(self.targets) or "nothing"
            self.command_problems.report(
                f"command/{exc.kind}",
                f"ignored command {_preview(msg.data)!r}: {exc}; still looking for {still}")
            return
        self._command_source = (msg.data, f"command {_preview(msg.data)!r}")
        result = self.set_parameters([Parameter("target", Parameter.Type.STRING, msg.data)])[0]
        if not result.successful:
            self.command_counts["commands_rejected"] += 1
            self.command_problems.report("command/target", f"ignored command "
                                         f"{_preview(msg.data)!r}: {result.reason}")

    def _validate_parameters(self, params) -> SetParametersResult:
        """Check new values; no side effects (the post-set callback applies them)."""
        values = {**self._values, **{p.name: p.value for p in params}}
        changed = {p.name for p in params}
        if "target" in changed and values["target"]:
            try:  # embedding happens later, off the executor (_switch_targets)
                parse_command(values["target"], values["max_command_length"])
            except CommandError as exc:
                return SetParametersResult(successful=False, reason=f"target: {exc}")
        if "depth_range" in changed:
            try:
                depth_range(values)
            except (TypeError, ValueError) as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        if changed & set(DETECTOR_FIELDS):
            try:
                detector_config(values)
            except (ConfigError, TypeError, ValueError) as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        if changed & set(TRACKING_FIELDS):
            try:
                tracking_config(values)
            except (TypeError, ValueError) as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        """Post-set: the values are set; make the node follow them."""
        self._values.update({p.name: p.value for p in params})
        changed = {p.name for p in params}
        if changed & set(DETECTOR_FIELDS):
            config = detector_config(self._values)
            self.updates.submit("settings", partial(
                self.loop.configure, lambda detector: detector.configure(config)))
        if changed & set(TRACKING_FIELDS):
            self.tracking.configure(tracking_config(self._values))
        if "target" in changed:
            text = self._values["target"]
            source, self._command_source = self._command_source, None
            if getattr(self._reverting, "active", False):
                return  # the update thread puts back the target in force: nothing to do
            label = source[1] if source and source[0] == text else "parameter target"
            targets = parse_command(text, self._values["max_command_length"]).targets \
                if text else ()
            self.updates.submit("target", partial(self._switch_targets, targets, label, text))

    def _keep_trying(self) -> bool:
        """Retry a target whose encoder is unavailable until a newer one waits or the
        node shuts down."""
        return not self.updates.waiting("target") and not self.updates.closed

    def _switch_targets(self, targets: tuple[str, ...], source: str, text: str) -> None:
        """Embed and switch to ``targets`` (the update thread; at start-up, the caller's).

        A refusal is reported and counted by the loop; ``target`` goes back to the
        text of the targets in force unless a newer one is already waiting. While
        the encoder is unavailable (a remote one down or frozen) it is retried."""
        if not self.loop.set_targets(targets, retry_while=self._keep_trying):
            if (not self.updates.waiting("target") and not self.updates.closed
                    and text != self._live_text):
                self._reverting.active = True
                try:
                    self.set_parameters([Parameter("target", Parameter.Type.STRING,
                                                   self._live_text)])
                finally:
                    self._reverting.active = False
            return
        self._live_text = text
        log = self.get_logger()
        log.info(f"looking for {', '.join(targets)} (from {source})" if targets
                 else f"search stopped (from {source})")
        outputs = self.outputs
        if outputs is not None and self.loop.running:
            try:
                outputs.publish_targets(targets)
            except Exception as exc:  # cleaned up meanwhile: the next activate announces
                self.problems.report("targets", f"could not announce the targets: {exc!r}")

    # --- results (the loop's publisher thread) --------------------------------
    def _publish_result(self, result: Result) -> None:
        camera = self.cameras[result.camera]
        outputs, spatial = camera.outputs, camera.spatial
        if outputs is None:
            raise RuntimeError("no publishers (the node was cleaned up)")
        outputs.publish(result)
        if spatial is not None:
            spatial.publish(result)
        self._record_age("latency", result.header)

    def _record_age(self, stage: str, header) -> None:
        """Time since the frame's stamp, when the stamp is on this clock (not a replayed bag)."""
        age = self.get_clock().now().nanoseconds * 1e-9 - (
            header.stamp.sec + header.stamp.nanosec * 1e-9)
        if 0.0 <= age < 60.0:
            self.loop.timings.add(stage, age)

    # --- diagnostics ------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Every input the node saw, and what became of it.

        The publisher thread adds keys (``no_3d_<reason>``) while the diagnostics
        timer reads: each Counter is copied in one step (``dict(...)``, atomic under
        the GIL) before it is iterated."""
        inputs: Counter[str] = Counter()
        spatial: Counter[str] = Counter()
        for camera in self.cameras.values():
            inputs.update(dict(camera.input.counts))
            if camera.spatial is not None:
                spatial.update(dict(camera.spatial.counts))
        return {**self.loop.counters(), **inputs, **spatial, **dict(self.command_counts)}

    def camera_figures(self) -> dict[str, object]:
        """Per named camera, ``c/<figure>`` (counters, ``rate_hz``); none for the unnamed one."""
        if "" in self.cameras:
            return {}
        figures: dict[str, object] = {}
        for name, row in self.loop.camera_figures().items():
            camera = self.cameras[name]
            row = {**row, **dict(camera.input.counts)}
            if camera.spatial is not None:
                row.update(dict(camera.spatial.counts))
            figures.update({f"{name}/{key}": value for key, value in row.items()})
        return figures

    def _diagnostic_figures(self):
        report = self.loop.health_report()
        if report.level == 0:
            report.message = (f"looking for {', '.join(self.targets)}" if self.targets
                              else "no target")
        detector = self.loop.detector
        device = str(detector.device) if detector is not None else ""
        figures = {**self.counters(), **self.camera_figures(), **self.loop.timings.summary(),
                   "targets": ", ".join(self.targets), "model": self._values["model"],
                   "device": device}
        return report, figures, device

    def stop(self) -> None:
        """Stop the update and loop threads (used on shutdown)."""
        self.updates.close()
        self.loop.stop()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ignore_stop_signals() -> None:
    """From here on a stop signal changes nothing: shutdown is already under way.

    ``ros2 launch`` sends SIGINT on Ctrl-C, after the terminal's own, and SIGTERM
    later; one landing in the clean-up would otherwise raise KeyboardInterrupt
    there (skipping the rest of it) or end the process mid-way. SIG_IGN also
    holds through interpreter finalization, which would restore the default
    action (killed by the signal: exit -2) for any other handler. Called again
    after rclpy's shutdown, which puts back the handlers it found."""
    for sig in STOP_SIGNALS:
        try:
            signal.signal(sig, signal.SIG_IGN)
        except ValueError:  # not the main thread (main() called from a test's thread)
            return


def _shut_down(node: PerceptionNode | None) -> None:
    """Stop the threads, destroy the node, shut rclpy down; every step runs."""
    steps = [] if node is None else [node.stop, node.destroy_node]
    for step in [*steps, rclpy.try_shutdown]:
        try:
            step()
        except Exception as exc:  # one failing step must not skip the others
            print(f"clip_perception: {getattr(step, '__name__', step)} failed on shutdown: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)


def main(args: list[str] | None = None) -> int:
    """Run the node; exits 1 if the model cannot be loaded, 0 on a stop signal."""
    configure_allocator()  # before rclpy and torch start their threads
    node = None
    code = 0
    try:
        rclpy.init(args=args)
        node = PerceptionNode()
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
        _ignore_stop_signals()
        _shut_down(node)
        _ignore_stop_signals()
    return code


if __name__ == "__main__":
    sys.exit(main())
