"""Soak the node over DDS: ``python -m clip_perception.benchmark --ros --soak MINUTES``.

Drives the node as a user would for ``MINUTES``: 640x480 rgb8 frames at 30 Hz,
a command every 15 s, a parameter change every 20 s and a lifecycle cycle
every 30 s (deactivate/activate; every ``--soak-full-every``-th cycle also
cleanup/configure, which reloads the model). Every 10 s it samples the node
process's RSS, threads and file descriptors, and at the end it reports:

* RSS growth from the end of the first minute to the end;
* threads and fds (min/max after the first minute);
* whether every whole 10-s window of each active period had results;
* whether the first result after each re-activation came from a frame sent
  after the activation was requested (no stale frame from before it).

Without ``--model`` the node loads a tiny random CLIP written to a temporary
checkpoint, through the real checkpoint-loading path, so the soak is cheap on a CPU.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.runtime.memory import footprint
from ..testing.scenes import make_scene
from .node_process import NodeProcess, local_ros_env, use_local_ros

COMMANDS = ("find the red block", "pick up the blue block", "find the red block and the "
            "blue block", "grab the red block please")
PARAMETERS = (("presence_threshold", 0.55), ("neutral_prompt", "a photo of a thing"),
              ("presence_threshold", 0.5), ("neutral_prompt", "a photo of an object"),
              ("window_stride", 0.5), ("window_stride", 0.4))
WINDOW = 10.0


@dataclass
class Cycle:
    """One lifecycle cycle: when it started and when the node was active again."""

    requested: float                     # wall time (ns) the deactivate was requested
    activate_requested: float | None = None
    active_at: float | None = None       # monotonic time activate succeeded
    first_stamp: int | None = None       # stamp (ns) of the first result after it
    full: bool = False
    failed: str = ""


@dataclass
class Soak:
    samples: list[tuple[float, dict]] = field(default_factory=list)
    results: list[float] = field(default_factory=list)        # monotonic arrival times
    active: list[list[float]] = field(default_factory=list)   # [start, end] monotonic
    cycles: list[Cycle] = field(default_factory=list)
    commands: int = 0
    parameter_sets: int = 0
    parameter_failures: int = 0
    frames: int = 0


def run_soak(args) -> int:
    minutes = float(args.soak)
    width, height = (int(v) for v in args.size.lower().split("x"))
    tmp = tempfile.mkdtemp(prefix="clip_perception_soak_")
    model = args.model if args.model and args.model != "ViT-B/32" else None
    if model is None:
        from ..testing.random_clip import write_checkpoint
        model = write_checkpoint(os.path.join(tmp, "tiny_random_clip.pt"), "tiny")
    env = local_ros_env(getattr(args, "domain", None) or os.environ.get("ROS_DOMAIN_ID") or "74")
    use_local_ros(env)
    params = {"model": model, "device": args.device, "precision": args.precision,
              "target": COMMANDS[0]}
    print(f"soak: {minutes:g} min; node model={model}; {width}x{height} rgb8 at {args.rate:g} Hz;"
          f" a command every 15 s, a parameter change every 20 s, a lifecycle cycle every 30 s "
          f"(cleanup/configure every {args.soak_full_every}th); ROS_DOMAIN_ID="
          f"{env['ROS_DOMAIN_ID']}", flush=True)
    node = NodeProcess(env, Path(tmp) / "node.log", params)
    try:
        soak = _drive(args, minutes, width, height, node)
    finally:
        code = node.stop(20)
    if soak is None:
        print(f"the node did not start:\n{node.log()[-3000:]}")
        return 1
    print(f"node exit status {code}; log {node.log_path}")
    return _report(soak)


def _drive(args, minutes: float, width: int, height: int, node: NodeProcess) -> Soak | None:
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool, String

    rclpy.init()
    probe = rclpy.create_node("clip_perception_soak")
    soak = Soak()
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    stamps: list[int] = []

    def on_debug(msg: Image) -> None:
        stamps.append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
        cycle = soak.cycles[-1] if soak.cycles else None
        if cycle and cycle.active_at is not None and cycle.first_stamp is None:
            cycle.first_stamp = stamps[-1]

    probe.create_subscription(Bool, "detected", lambda m: soak.results.append(time.monotonic()),
                              reliable)
    probe.create_subscription(Image, "debug_image", on_debug, reliable)
    images = probe.create_publisher(Image, "image", qos_profile_sensor_data)
    commands = probe.create_publisher(String, "command", reliable)
    change = probe.create_client(ChangeState, "/clip_perception/change_state")
    set_params = probe.create_client(SetParameters, "/clip_perception/set_parameters")
    scene = make_scene(np.random.default_rng(0), width, height, "red", distractors=2)
    template = Image(height=height, width=width, encoding="rgb8", step=width * 3,
                     data=scene.image.tobytes())
    template.header.frame_id = "camera"
    pid = node.proc.pid

    def wall_ns() -> int:
        return probe.get_clock().now().nanoseconds

    try:
        deadline = time.monotonic() + 300
        while images.get_subscription_count() == 0 or not change.service_is_ready():
            rclpy.spin_once(probe, timeout_sec=0.1)
            if not node.alive() or time.monotonic() > deadline:
                return None
        start = time.monotonic()
        soak.active.append([start, start])
        end = start + minutes * 60
        period = 1.0 / args.rate
        next_frame, next_sample = start, start
        next_command, next_param, next_cycle = start + 15, start + 20, start + 30
        steps: list[int] = []   # transitions still to request in the current cycle
        pending = None          # the ChangeState future in flight
        n_cmd = n_param = n_cycle = 0
        while time.monotonic() < end and node.alive():
            now = time.monotonic()
            if now >= next_frame:
                template.header.stamp = probe.get_clock().now().to_msg()
                images.publish(template)
                soak.frames += 1
                next_frame += period
                if next_frame < now - 1.0:  # fell behind (CPU starved): do not burst
                    next_frame = now + period
            if now >= next_sample:
                soak.samples.append((now - start, footprint(pid)))
                s = soak.samples[-1]
                print(f"  t={s[0]:7.1f} s  rss={s[1]['rss_kb'] / 1024:8.1f} MiB  threads="
                      f"{s[1]['threads']:3d}  fds={s[1]['fds']:4d}  results={len(soak.results)}",
                      flush=True)
                next_sample += WINDOW
            if now >= next_command:
                n_cmd += 1
                commands.publish(String(data=COMMANDS[n_cmd % len(COMMANDS)]))
                soak.commands += 1
                next_command += 15
            if now >= next_param:
                name, value = PARAMETERS[n_param % len(PARAMETERS)]
                n_param += 1
                kind = (ParameterType.PARAMETER_DOUBLE if isinstance(value, float)
                        else ParameterType.PARAMETER_STRING)
                field_name = "double_value" if isinstance(value, float) else "string_value"
                request = SetParameters.Request(parameters=[Parameter(
                    name=name, value=ParameterValue(type=kind, **{field_name: value}))])
                future = set_params.call_async(request)
                future.add_done_callback(lambda f: _count_param(soak, f))
                next_param += 20
            if now >= next_cycle and pending is None and not steps:
                n_cycle += 1
                full = n_cycle % max(1, args.soak_full_every) == 0
                soak.active[-1][1] = now
                soak.cycles.append(Cycle(requested=wall_ns(), full=full))
                steps = [Transition.TRANSITION_DEACTIVATE]
                if full:
                    steps += [Transition.TRANSITION_CLEANUP, Transition.TRANSITION_CONFIGURE]
                steps.append(Transition.TRANSITION_ACTIVATE)
                next_cycle += 30
            if pending is None and steps:
                step = steps.pop(0)
                if step == Transition.TRANSITION_ACTIVATE:
                    soak.cycles[-1].activate_requested = wall_ns()
                pending = (step, change.call_async(
                    ChangeState.Request(transition=Transition(id=step))))
            if pending is not None and pending[1].done():
                step, future = pending
                pending = None
                ok = future.result() is not None and future.result().success
                if not ok:
                    soak.cycles[-1].failed = f"transition {step} failed"
                    steps = []
                elif step == Transition.TRANSITION_ACTIVATE:
                    soak.cycles[-1].active_at = time.monotonic()
                    soak.active.append([soak.cycles[-1].active_at, end])
            rclpy.spin_once(probe, timeout_sec=max(0.0, min(next_frame, next_sample)
                                                   - time.monotonic()))
        soak.active[-1][1] = min(soak.active[-1][1], time.monotonic())
        soak.samples.append((time.monotonic() - start, footprint(pid)))
        soak.start = start  # type: ignore[attr-defined]
    finally:
        probe.destroy_node()
        rclpy.try_shutdown()
    return soak


def _count_param(soak: Soak, future) -> None:
    soak.parameter_sets += 1
    result = future.result()
    if result is None or not all(r.successful for r in result.results):
        soak.parameter_failures += 1


def _windows(soak: Soak) -> tuple[int, int, list[str]]:
    """(windows with results, whole windows, descriptions of empty ones)."""
    good = total = 0
    empty = []
    results = np.array(soak.results)
    for a, b in soak.active:
        t = a
        while t + WINDOW <= b:
            total += 1
            n = int(((results >= t) & (results < t + WINDOW)).sum()) if len(results) else 0
            if n:
                good += 1
            else:
                empty.append(f"{t - soak.start:.0f}-{t + WINDOW - soak.start:.0f} s")
            t += WINDOW
    return good, total, empty


def _report(soak: Soak) -> int:
    after = [(t, s) for t, s in soak.samples if t >= 60.0]
    rss0 = after[0][1]["rss_kb"] if after else float("nan")
    rss1 = soak.samples[-1][1]["rss_kb"]
    peak = max(s["rss_kb"] for _, s in after) if after else float("nan")
    growth = (rss1 - rss0) / rss0 if after else float("nan")
    threads = [s["threads"] for _, s in after] or [0]
    fds = [s["fds"] for _, s in after] or [0]
    good, total, empty = _windows(soak)
    reacts = [c for c in soak.cycles if c.active_at is not None]
    fresh = [c for c in reacts if c.first_stamp is not None
             and c.first_stamp > (c.activate_requested or 0)]
    stale = [c for c in reacts if c.first_stamp is not None and c not in fresh]
    failed = [c.failed for c in soak.cycles if c.failed]
    print(f"frames sent {soak.frames}; results {len(soak.results)}; commands {soak.commands}; "
          f"parameter sets {soak.parameter_sets} ({soak.parameter_failures} refused); "
          f"lifecycle cycles {len(soak.cycles)} ({sum(c.full for c in soak.cycles)} with "
          f"cleanup/configure), {len(failed)} failed")
    print(f"RSS: {rss0 / 1024:.1f} MiB at 1 min -> {rss1 / 1024:.1f} MiB at the end "
          f"({growth:+.1%}); peak after 1 min {peak / 1024:.1f} MiB")
    print(f"threads after 1 min: {min(threads)}..{max(threads)}; fds after 1 min: "
          f"{min(fds)}..{max(fds)}")
    print(f"10-s windows with results: {good}/{total}" + (f" (empty: {', '.join(empty)})"
                                                          if empty else ""))
    missing = len(reacts) - len(fresh) - len(stale)
    print(f"first result after re-activation from a frame sent after it: {len(fresh)}/"
          f"{len(reacts)} (stale: {len(stale)}, no result: {missing})")
    ok = (after and growth < 0.05 and max(threads) == min(threads) and max(fds) - min(fds) <= 2
          and good == total and len(fresh) == len(reacts) and not failed)
    print(f"soak_rss_growth={growth:.4f} soak_threads={min(threads)}-{max(threads)} "
          f"soak_fds={min(fds)}-{max(fds)} soak_windows={good}/{total} "
          f"soak_fresh_reactivations={len(fresh)}/{len(reacts)} soak_ok={bool(ok)}")
    return 0 if ok else 1
