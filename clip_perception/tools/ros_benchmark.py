"""Latency under load over real DDS: ``python -m clip_perception.tools.benchmark --ros``.

Starts the node in its own process, publishes frames at a camera rate on
loopback for a while, and reads the node's per-frame timings from
``/diagnostics``: latency (frame stamp to outputs handed to DDS), transport
(stamp to image callback: DDS, deserialisation and the zero-copy view),
waiting for the worker, processing, and publishing. No debug image is
requested, so the outputs are the ones a planner uses.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..testing.scenes import make_scene
from .node_process import NodeProcess, local_ros_env, use_local_ros

DEFAULT_DOMAIN = "74"
RANDOM_VIT_B32 = "clip_perception.testing.random_clip:vit_b32"


def default_model() -> str:
    """ViT-B/32 if its weights are cached here, else the same architecture with random weights."""
    from ..core.encoders import default_download_root

    if os.path.isfile(os.path.join(default_download_root(), "ViT-B-32.pt")):
        return "ViT-B/32"
    return RANDOM_VIT_B32


def run_ros_benchmark(args) -> int:
    """Publish ``args.size`` frames at ``args.rate`` Hz for ``args.duration`` s and report;
    with ``args.soak`` (minutes), soak the node instead (:mod:`.soak`)."""
    if getattr(args, "soak", None) is not None:
        from .soak import run_soak
        return run_soak(args)
    width, height = (int(v) for v in args.size.lower().split("x"))
    model = args.model if args.model and args.model != "ViT-B/32" else default_model()
    env = local_ros_env(getattr(args, "domain", None) or os.environ.get("ROS_DOMAIN_ID")
                        or DEFAULT_DOMAIN)
    use_local_ros(env)
    log_path = Path(tempfile.gettempdir()) / f"clip_perception_bench_{os.getpid()}.log"
    mode = getattr(args, "mode", "crops")
    params = {"model": model, "device": args.device, "precision": args.precision,
              "target": "find the red block", "mode": mode}
    print(f"ros benchmark: node with model={model} mode={mode} device={args.device} precision="
          f"{args.precision}; {width}x{height} rgb8 frames at {args.rate} Hz for "
          f"{args.duration} s over loopback (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']})", flush=True)
    node = NodeProcess(env, log_path, params)
    try:
        return _measure(args, width, height, node)
    finally:
        node.stop(20)


def _measure(args, width: int, height: int, node: NodeProcess) -> int:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool

    rclpy.init()
    probe = rclpy.create_node("clip_perception_bench")
    outputs: list[bool] = []
    diagnostics: dict[str, str] = {}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "clip_perception" in status.name:
                diagnostics.update({kv.key: kv.value for kv in status.values})

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    probe.create_subscription(Bool, "detected", lambda m: outputs.append(m.data), reliable)
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, reliable)
    publisher = probe.create_publisher(Image, "image", qos_profile_sensor_data)
    scene = make_scene(np.random.default_rng(0), width, height, "red", distractors=2)
    template = Image(height=height, width=width, encoding="rgb8", step=width * 3,
                     data=scene.image.tobytes())
    template.header.frame_id = "camera"
    try:
        deadline = time.monotonic() + 300
        while publisher.get_subscription_count() == 0 or not diagnostics:
            rclpy.spin_once(probe, timeout_sec=0.1)
            if not node.alive() or time.monotonic() > deadline:
                print(f"the node did not start:\n{node.log()[-3000:]}")
                return 1
        received_before = int(diagnostics.get("frames_received", 0))
        sent, period = 0, 1.0 / args.rate
        start = time.monotonic()
        while time.monotonic() - start < args.duration:
            template.header.stamp = probe.get_clock().now().to_msg()
            publisher.publish(template)
            sent += 1
            next_at = start + sent * period
            while time.monotonic() < next_at:
                rclpy.spin_once(probe, timeout_sec=max(0.0, next_at - time.monotonic()))
        published_at = len(outputs)
        settle = time.monotonic() + 60
        while time.monotonic() < settle and len(outputs) == published_at:
            rclpy.spin_once(probe, timeout_sec=0.1)  # the frame in flight
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            rclpy.spin_once(probe, timeout_sec=0.1)  # fresh diagnostics
    finally:
        probe.destroy_node()
        rclpy.try_shutdown()
    return _report(args, sent, received_before, len(outputs), diagnostics)


def _ms(diagnostics: dict[str, str], key: str) -> float:
    return float(diagnostics.get(key, "nan"))


def _report(args, sent: int, received_before: int, processed: int,
            diagnostics: dict[str, str]) -> int:
    received = int(diagnostics.get("frames_received", 0)) - received_before
    lat50, lat95 = _ms(diagnostics, "latency_ms_p50"), _ms(diagnostics, "latency_ms_p95")
    proc50, proc95 = _ms(diagnostics, "processing_ms_p50"), _ms(diagnostics, "processing_ms_p95")
    transport = _ms(diagnostics, "transport_ms_p50")
    wait = _ms(diagnostics, "wait_ms_p50")
    publish = _ms(diagnostics, "publish_ms_p50")
    overhead = transport + publish
    print(f"frames: published {sent}, received by the node {received}, processed {processed} "
          f"({processed / max(sent, 1):.1%}); the rest were replaced by newer frames")
    print(f"latency, frame stamp to outputs published: p50 {lat50:.1f} ms, p95 {lat95:.1f} ms")
    print(f"node processing: p50 {proc50:.1f} ms, p95 {proc95:.1f} ms; waiting for the worker "
          f"p50 {wait:.1f} ms")
    print(f"outside the model, per frame: transport+conversion p50 {transport:.2f} ms + "
          f"publishing p50 {publish:.2f} ms = {overhead:.2f} ms")
    bound = 2 * proc50
    print(f"no backlog: latency p95 {lat95:.0f} ms {'<=' if lat95 <= bound else '>'} "
          f"2 x processing p50 {bound:.0f} ms")
    print(f"ros_latency_p50_ms={lat50:.1f} ros_latency_p95_ms={lat95:.1f} "
          f"processing_p50_ms={proc50:.1f} overhead_ms={overhead:.2f} "
          f"processed_fraction={processed / max(sent, 1):.3f} rate_hz={args.rate:g} "
          f"device={diagnostics.get('device', args.device)} mode={getattr(args, 'mode', 'crops')}")
    return 0 if processed else 1
