"""The node end to end on a generated scene: ``python -m clip_perception.tools.demo``.

Writes a short rosbag of a table-top scene (a red block sliding past a blue
one) with commands, starts the perception node, replays the bag into it and
prints what the node reports for each frame, saving the annotated frames.

The model is CLIP ViT-B/32 unless ``--model`` says otherwise. Where its
weights are not on this machine and cannot be downloaded, the demo says so,
says how to point it at a local checkpoint, and runs the built-in
known-answer colour encoder instead, labelled as such.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.command import parse_command
from ..core.windows import box_iou
from ..testing.scenes import background, paint
from .bag_writer import write_bag
from .evaluate import COLOR_ENCODER
from .node_process import NodeProcess, local_ros_env, use_local_ros

T0 = 1_700_000_000 * 10**9
DEFAULT_DOMAIN = "73"
COMMANDS = (  # (frame index, command)
    (0, "pick up the red block"),
    (5, "find the green block"),
    (8, "grab the blue block and the red block"),
)


def make_sequence(frames: int, seed: int = 0) -> list[tuple[int, np.ndarray, dict]]:
    """Frames at 2 Hz: ``(stamp_ns, rgb, {colour: true box})``."""
    rng = np.random.default_rng(seed)
    base = background(rng, 640, 480)
    out = []
    for i in range(frames):
        image = base.copy()
        x = 40 + (440 * i) // max(frames - 1, 1)
        boxes = {"red": (x, 250, x + 110, 340), "blue": (430, 60, 540, 160)}
        for colour, box in boxes.items():
            paint(image, box, colour, rng)
        out.append((T0 + i * 500_000_000, image, boxes))
    return out


def start_node(model: str, device: str, env: dict[str, str], log_path: Path) -> NodeProcess:
    """The node in its own process, reading frames from the bag's camera topic."""
    return NodeProcess(env, log_path, {"model": model, "device": device},
                       {"image": "/camera/image_raw"})


def wait_until_ready(node: NodeProcess, timeout: float) -> str | None:
    """None once the node is active; else the node's error (it exited)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = node.log()
        if "active:" in text:
            return None
        if not node.alive():
            errors = [line for line in text.splitlines() if "[ERROR]" in line or "[FATAL]" in line]
            return "\n".join(errors) or text[-2000:]
        time.sleep(0.2)
    return f"the node did not become active within {timeout:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_perception.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B/32",
                        help="CLIP name, checkpoint path or module:factory (default ViT-B/32)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--out", default="demo_output", help="folder for annotated frames")
    parser.add_argument("--no-fallback", action="store_true",
                        help="fail instead of using the colour encoder when CLIP cannot load")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the node to load the model")
    args = parser.parse_args(argv)

    env = local_ros_env(os.environ.get("ROS_DOMAIN_ID") or DEFAULT_DOMAIN)
    use_local_ros(env)  # a demo stays on this machine
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="clip_perception_demo_"))
    sequence = make_sequence(args.frames)
    commands = [(T0 + i * 500_000_000 - 100_000_000, text) for i, text in COMMANDS
                if i < args.frames]
    bag = write_bag(work / "demo_bag", [(t, image) for t, image, _ in sequence], commands)
    print(f"clip_perception demo: {len(sequence)} frames (640x480, 2 Hz) and "
          f"{len(commands)} commands written to the rosbag {bag}")

    model = args.model
    print(f"starting the node with model {model} (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, "
          "discovery on localhost only)...")
    node = start_node(model, args.device, env, work / "node.log")
    error = wait_until_ready(node, args.timeout)
    if error is not None:
        node.stop()
        print(f"\nThe node could not load {model}:\n{error}\n")
        if args.no_fallback or model == COLOR_ENCODER:
            return 1
        print("No CLIP weights are available here (no cached checkpoint, no network). To run\n"
              "the demo with real CLIP offline, copy ViT-B-32.pt into ~/.cache/clip/ or run\n"
              "  make demo DEMO_ARGS='--model /path/to/ViT-B-32.pt'\n"
              "Continuing with the built-in known-answer COLOUR encoder (embeddings are colour\n"
              "histograms, not CLIP): it shows the pipeline, topics and outputs, not CLIP's "
              "accuracy.\n")
        model = COLOR_ENCODER
        node = start_node(model, args.device, env, work / "node.log")
        error = wait_until_ready(node, args.timeout)
        if error is not None:
            node.stop()
            print(f"the node failed with the colour encoder too:\n{error}")
            return 1
    try:
        return _replay_and_report(bag, sequence, commands, model, out)
    finally:
        node.stop()
        print(f"node log: {work / 'node.log'}")


def _replay_and_report(bag: Path, sequence, commands, model: str, out: Path) -> int:
    import cv2
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, RegionOfInterest
    from std_msgs.msg import Bool

    from .bag_replay import BagPlayer

    rclpy.init()
    node = rclpy.create_node("clip_perception_demo")
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    truth = {t: boxes for t, _, boxes in sequence}
    # The command replayed last before a frame is what the node looked for in it.
    asked = [(t, ", ".join(parse_command(text).targets)) for t, text in commands]

    def targets_at(stamp: int) -> str:
        return [names for t, names in asked if t <= stamp][-1]
    # Per processed frame the node publishes detected, region (if detected) and
    # debug_image, each in order on its topic: the i-th of each belong together.
    got: dict[str, list] = {"detected": [], "region": [], "debug": []}
    state = {"printed": 0, "regions_used": 0, "hits": 0, "last": False}

    def report() -> None:
        while state["printed"] < min(len(got["detected"]), len(got["debug"])):
            i = state["printed"]
            found, msg = got["detected"][i], got["debug"][i]
            if found and state["regions_used"] >= len(got["region"]):
                return  # its region is still on the way
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            index = (stamp - T0) // 500_000_000
            rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
            path = out / f"frame_{index:02d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            targets = targets_at(stamp)
            line = f"frame {index:2d}  looking for [{targets}]: "
            if found:
                r = got["region"][state["regions_used"]]
                state["regions_used"] += 1
                state["hits"] += 1
                box = (r.x_offset, r.y_offset, r.x_offset + r.width, r.y_offset + r.height)
                colour = targets.split(",")[0].split()[0]
                iou = box_iou(box, truth[stamp][colour]) if colour in truth[stamp] else 0.0
                line += (f"FOUND  region x={box[0]} y={box[1]} w={r.width} h={r.height}"
                         f"  (IoU with the true box {iou:.2f})")
            else:
                line += "not in view"
            print(f"{line}  -> {path}")
            state["printed"] += 1
            state["last"] = state["last"] or stamp == last_stamp

    def recorder(key: str):
        def record(msg) -> None:
            got[key].append(msg.data if key == "detected" else msg)
            report()
        return record

    last_stamp = sequence[-1][0]
    node.create_subscription(Bool, "detected", recorder("detected"), reliable)
    node.create_subscription(RegionOfInterest, "region", recorder("region"), reliable)
    node.create_subscription(Image, "debug_image", recorder("debug"), reliable)
    try:
        player = BagPlayer(node, bag)
        end = time.monotonic() + 30
        while not player.wait_for_subscribers(0.1) and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        print(f"replaying the bag into the node (model {model}); the node processes the newest "
              "frame and drops the ones that arrive meanwhile:")
        player.play(on_publish=lambda topic, msg: rclpy.spin_once(node, timeout_sec=0.0))
        end = time.monotonic() + 120
        while not state["last"] and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        player.close()
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    processed = state["printed"]
    print(f"\n{len(sequence)} frames sent, {processed} processed "
          f"({len(sequence) - processed} dropped while the node was busy), "
          f"{state['hits']} with every target found. Annotated frames: {out.resolve()}")
    return 0 if state["last"] else 1


if __name__ == "__main__":
    sys.exit(main())
