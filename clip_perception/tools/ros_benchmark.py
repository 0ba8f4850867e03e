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
    from ..core.model.clip_internals import default_download_root

    if os.path.isfile(os.path.join(default_download_root(), "ViT-B-32.pt")):
        return "ViT-B/32"
    return RANDOM_VIT_B32


def run_ros_benchmark(args) -> int:
    """Publish ``args.size`` frames at ``args.rate`` Hz for ``args.duration`` s and report;
    with ``args.soak`` (minutes), soak the node instead (:mod:`.soak`)."""
    if getattr(args, "soak", None) is not None:
        from .soak import run_soak
        return run_soak(args)
    if getattr(args, "cameras", None):
        return run_camera_benchmark(args)
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


# --- several cameras in one node against one node per camera ---------------------------

def process_memory(pid: int) -> tuple[int, int | None]:
    """(RSS, PSS or None where smaps_rollup is unreadable) of ``pid``, bytes."""
    rss = pss = None
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss or 0, pss


def run_camera_benchmark(args) -> int:
    """``--ros --cameras N``: phase 1, one node with N cameras; phase 2, N single-camera
    nodes at once; phase 3, one single-camera node alone. Each camera gets its own scene
    at ``args.rate`` Hz for ``args.duration`` s; reports the processes' memory and each
    camera's result rate, against the N nodes and against the lone node."""
    n = int(args.cameras)
    width, height = (int(v) for v in args.size.lower().split("x"))
    model = args.model if args.model and args.model != "ViT-B/32" else default_model()
    env = local_ros_env(getattr(args, "domain", None) or os.environ.get("ROS_DOMAIN_ID")
                        or DEFAULT_DOMAIN)
    use_local_ros(env)
    params = {"model": model, "device": args.device, "precision": args.precision,
              "target": "find the red block", "mode": getattr(args, "mode", "crops")}
    names = [f"cam{i}" for i in range(n)]
    print(f"camera benchmark: {n} cameras, model={model} device={args.device} precision="
          f"{args.precision}; {width}x{height} rgb8 frames at {args.rate:g} Hz per camera for "
          f"{args.duration:g} s per phase over loopback (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']})",
          flush=True)
    scenes = [make_scene(np.random.default_rng(i), width, height, "red", present=i % 2 == 0,
                         distractors=2).image for i in range(n)]
    tmp = Path(tempfile.gettempdir())
    # phase 1: one node, N cameras, in namespace /multi
    multi = [NodeProcess(env, tmp / f"clip_perception_cams_multi_{os.getpid()}.log",
                         {**params, "cameras": names}, {"__ns": "/multi"})]
    try:
        one = _measure_cameras(args, multi, [f"/multi/{c}/" for c in names], scenes)
    finally:
        for node in multi:
            node.stop(20)
    if one is None:
        return 1
    # phase 2: N nodes, one camera each, in namespaces /single0..
    singles = [NodeProcess(env, tmp / f"clip_perception_cams_single{i}_{os.getpid()}.log",
                           params, {"__ns": f"/single{i}"}) for i in range(n)]
    try:
        many = _measure_cameras(args, singles, [f"/single{i}/" for i in range(n)], scenes)
    finally:
        for node in singles:
            node.stop(20)
    if many is None:
        return 1
    # phase 3: one single-camera node alone (the single-camera rate)
    lone = [NodeProcess(env, tmp / f"clip_perception_cams_lone_{os.getpid()}.log", params,
                        {"__ns": "/lone"})]
    try:
        alone = _measure_cameras(args, lone, ["/lone/"], scenes[:1])
    finally:
        lone[0].stop(20)
    if alone is None:
        return 1
    return _report_cameras(n, one, many, alone, args)


def _measure_cameras(args, nodes, prefixes: list[str], scenes) -> dict | None:
    """Publish each scene on its prefix's ``image`` and count ``detected`` per prefix."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool

    rclpy.init()
    probe = rclpy.create_node("clip_perception_camera_bench")
    counts = {p: 0 for p in prefixes}
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    devices: set[str] = set()

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            devices.update(kv.value for kv in status.values if kv.key == "device" and kv.value)

    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, reliable)

    def counter(prefix):
        def on_detected(msg) -> None:
            counts[prefix] += 1
        return on_detected

    pubs, templates = [], []
    for prefix, rgb in zip(prefixes, scenes):
        probe.create_subscription(Bool, prefix + "detected", counter(prefix), reliable)
        pubs.append(probe.create_publisher(Image, prefix + "image", qos_profile_sensor_data))
        h, w = rgb.shape[:2]
        msg = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=rgb.tobytes())
        msg.header.frame_id = prefix.strip("/").replace("/", "_")
        templates.append(msg)
    period = 1.0 / args.rate

    def publish_for(seconds: float) -> None:
        start, sent = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            stamp = probe.get_clock().now().to_msg()
            for pub, msg in zip(pubs, templates):
                msg.header.stamp = stamp
                pub.publish(msg)
            sent += 1
            next_at = start + sent * period
            while time.monotonic() < next_at:
                rclpy.spin_once(probe, timeout_sec=max(0.0, next_at - time.monotonic()))

    try:
        deadline = time.monotonic() + 300
        while not all(p.get_subscription_count() for p in pubs) or not all(counts.values()):
            if not all(node.alive() for node in nodes) or time.monotonic() > deadline:
                logs = "\n".join(node.log()[-2000:] for node in nodes)
                print(f"a node did not start or answer:\n{logs}")
                return None
            publish_for(0.5)  # warm-up: until every camera has answered once
        before = dict(counts)
        publish_for(args.duration)
        rates = {p: (counts[p] - before[p]) / args.duration for p in prefixes}
        memory = [process_memory(node.proc.pid) for node in nodes]
    finally:
        probe.destroy_node()
        rclpy.try_shutdown()
    pss = None if any(m[1] is None for m in memory) else sum(m[1] for m in memory)
    return {"rates": list(rates.values()), "rss": sum(m[0] for m in memory), "pss": pss,
            "processes": len(nodes), "device": ",".join(sorted(devices)) or "?"}


def _report_cameras(n: int, one: dict, many: dict, alone: dict, args) -> int:
    mib = 1 / 2**20
    for label, phase in ((f"one node, {n} cameras", one), (f"{n} nodes, 1 camera each", many),
                         ("1 node, 1 camera, alone", alone)):
        pss = "n/a" if phase["pss"] is None else f"{phase['pss'] * mib:.0f} MiB"
        rates = ", ".join(f"{r:.2f}" for r in phase["rates"])
        print(f"{label}: {phase['processes']} process(es), RSS {phase['rss'] * mib:.0f} MiB, "
              f"PSS {pss}; results per camera per second: {rates}")
    memory_ratio = one["rss"] / max(many["rss"], 1)
    pss_ratio = (None if one["pss"] is None or many["pss"] is None
                 else one["pss"] / max(many["pss"], 1))
    separate = sum(many["rates"]) / n
    single = alone["rates"][0]
    rate_ratio_min = min(one["rates"]) / single if single else float("nan")
    vs_nodes = min(one["rates"]) / separate if separate else float("nan")
    print(f"goals: memory (RSS) of one node <= 0.60 of {n} nodes: {memory_ratio:.2f}; each "
          f"camera >= 0.45 of the single-camera rate (a lone 1-camera node): "
          f"{rate_ratio_min:.2f}; against {n} nodes running at once: {vs_nodes:.2f}")
    pss_text = "n/a" if pss_ratio is None else f"{pss_ratio:.3f}"
    print(f"cameras={n} memory_ratio={memory_ratio:.3f} pss_ratio={pss_text} "
          f"rate_ratio_min={rate_ratio_min:.3f} rate_ratio_vs_nodes={vs_nodes:.3f} "
          f"single_rate_hz={single:.2f} nodes_rate_hz={separate:.2f} "
          f"multi_rate_min_hz={min(one['rates']):.2f} rate_hz={args.rate:g} device={one['device']}")
    return 0 if min(one["rates"]) > 0 else 1
