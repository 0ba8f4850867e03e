"""The node end to end on a generated RGB-D scene: ``python -m clip_perception.tools.demo``.

Writes a short rosbag of a table-top scene with known geometry (a red block
sliding past a blue one and coming closer): compressed colour (jpeg), depth
(16UC1) and camera_info on a RealSense driver's topic names, plus commands.
Starts the perception node remapped onto those topics, replays the bag into
it and prints what the node reports for each processed frame, read from the
stamped, self-describing ``result`` topic: the frame (from the stamp), the
targets it was computed for, each box with its IoU against the truth, and
the 3D position with its error against the truth. Saves annotated frames.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.detect.windows import box_iou
from ..core.io.result_json import FrameResult, ResultSchemaError, parse_result
from ..testing.rgbd_scenes import RgbdScene, approaching_sequence, face_centre
from .bag_writer import write_bag
from .evaluate import COLOR_ENCODER
from .node_process import NodeProcess, local_ros_env, use_local_ros

T0 = 1_700_000_000 * 10**9
STEP = 500_000_000  # 2 Hz
DEFAULT_DOMAIN = "73"
FRAME_ID = "camera_color_optical_frame"
COMMANDS = (  # (frame index, command)
    (0, "pick up the red block"),
    (5, "find the green block"),
    (8, "grab the blue block and the red block"),
)
# The bag uses a RealSense driver's topic names (realsense2_camera, align_depth on);
# the node is remapped onto them as a user would.
CAMERA = "/camera/camera"
COLOUR_TOPIC = f"{CAMERA}/color/image_raw"              # + /compressed
DEPTH_TOPIC = f"{CAMERA}/aligned_depth_to_color/image_raw"
INFO_TOPIC = f"{CAMERA}/color/camera_info"
REMAPS = {"image/compressed": COLOUR_TOPIC + "/compressed", "depth": DEPTH_TOPIC,
          "camera_info": INFO_TOPIC}


@dataclass(frozen=True)
class Truth:
    """Where each block is in one frame: its box (pixels) and visible-face centre (m)."""

    boxes: dict[str, tuple[int, int, int, int]]
    centres: dict[str, np.ndarray]


def make_sequence(frames: int, seed: int = 0) -> list[tuple[int, RgbdScene, Truth]]:
    """RGB-D frames at 2 Hz: a red block sliding right and coming closer past a blue
    one, with known intrinsics, and the truth per block."""
    out = []
    for i, scene in enumerate(approaching_sequence(frames, seed)):
        boxes = {o.colour: o.box for o in scene.scene.objects}
        centres = {c: face_centre(b, scene.depths[c], scene.camera) for c, b in boxes.items()}
        out.append((T0 + i * STEP, scene, Truth(boxes, centres)))
    return out


def describe(result: FrameResult, truth: Truth | None) -> list[str]:
    """What one result says, per target it names, checked against the truth of its frame.

    The frame comes from the result's stamp and the targets from the result itself,
    never from when a command was sent.
    """
    lines = []
    for t in result.targets:
        colour = t.phrase.split()[0]
        known = truth is not None and colour in truth.boxes
        if not t.present:
            lines.append(f"[{t.phrase}] not in view (score {t.score:.2f})"
                         + ("  <- it IS in the frame" if known else ""))
            continue
        x0, y0, x1, y1 = t.box
        iou = box_iou(t.box, truth.boxes[colour]) if known else 0.0
        line = (f"[{t.phrase}] FOUND score {t.score:.2f} box x={x0} y={y0} w={x1 - x0} "
                f"h={y1 - y0} (IoU with the true box {iou:.2f})")
        if t.position is not None:
            x, y, z = t.position
            sd = np.sqrt(np.diag(np.reshape(t.covariance, (3, 3))))
            line += f"; 3D ({x:+.3f}, {y:+.3f}, {z:.3f}) m, sd ({sd[0] * 100:.1f}, " \
                    f"{sd[1] * 100:.1f}, {sd[2] * 100:.1f}) cm"
            if known:
                error = float(np.linalg.norm(np.asarray(t.position) - truth.centres[colour]))
                line += f", error vs truth {error * 1000:.1f} mm"
        elif t.depth_status not in ("ok", "not_requested"):
            line += f"; no 3D position ({t.depth_status})"
        lines.append(line)
    return lines or ["no target"]


def start_node(model: str, device: str, env: dict[str, str], log_path: Path) -> NodeProcess:
    """The node in its own process: compressed colour, depth and camera_info from the
    bag's RealSense topics."""
    return NodeProcess(env, log_path, {"model": model, "device": device,
                                       "image_transport": "compressed", "use_depth": True},
                       REMAPS)


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
    commands = [(T0 + i * STEP - 100_000_000, text) for i, text in COMMANDS
                if i < args.frames]
    camera = sequence[0][1].camera
    bag = write_bag(work / "demo_bag", [(t, s.image) for t, s, _ in sequence], commands,
                    image_topic=COLOUR_TOPIC, image_format="jpeg",
                    depth=[(t, s.depth) for t, s, _ in sequence], depth_encoding="16UC1",
                    depth_topic=DEPTH_TOPIC, camera=camera, camera_info_topic=INFO_TOPIC,
                    frame_id=FRAME_ID)
    print(f"clip_perception demo: {len(sequence)} RGB-D frames (640x480, 2 Hz; jpeg colour, "
          f"16UC1 depth, camera_info fx={camera.fx:.0f}) and {len(commands)} commands "
          f"written to the rosbag {bag}")

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
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from .bag_replay import BagPlayer

    rclpy.init()
    node = rclpy.create_node("clip_perception_demo")
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    truth = {t: tr for t, _, tr in sequence}
    last_stamp = sequence[-1][0]
    state = {"results": 0, "found3d": 0, "errors": [], "last": False}
    debug: dict[int, np.ndarray] = {}

    def on_result(msg: String) -> None:
        try:
            result = parse_result(msg.data)
        except ResultSchemaError as exc:
            print(f"ignored a result this demo cannot read: {exc}")
            return
        index = (result.stamp_ns - T0) // STEP
        frame_truth = truth.get(result.stamp_ns)
        state["results"] += 1
        print(f"frame {index:2d} (stamp {result.stamp_ns / 1e9:.1f}, {result.frame_id}):")
        for line in describe(result, frame_truth):
            print(f"    {line}")
        for t in result.targets:
            colour = t.phrase.split()[0]
            if t.position is not None and frame_truth and colour in frame_truth.centres:
                state["found3d"] += 1
                state["errors"].append(float(np.linalg.norm(
                    np.asarray(t.position) - frame_truth.centres[colour])))
        state["last"] = state["last"] or result.stamp_ns == last_stamp

    def on_debug(msg: Image) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
        path = out / f"frame_{(stamp - T0) // STEP:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        debug[stamp] = rgb

    node.create_subscription(String, "result", on_result, reliable)
    node.create_subscription(Image, "debug_image", on_debug, reliable)
    try:
        player = BagPlayer(node, bag)
        end = time.monotonic() + 30
        while not player.wait_for_subscribers(0.1) and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        print(f"replaying the bag into the node (model {model}); the node processes the newest "
              "frame and drops the ones that arrive meanwhile. Per processed frame, from the "
              "node's `result` topic:")
        player.play(on_publish=lambda topic, msg: rclpy.spin_once(node, timeout_sec=0.0))
        end = time.monotonic() + 120
        while not state["last"] and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:  # the last debug image
            rclpy.spin_once(node, timeout_sec=0.1)
        player.close()
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    processed = state["results"]
    errors = np.asarray(state["errors"]) * 1000
    print(f"\n{len(sequence)} frames sent, {processed} processed "
          f"({len(sequence) - processed} dropped while the node was busy); "
          f"{len(debug)} annotated frames in {out.resolve()}")
    if len(errors):
        print(f"3D positions: {len(errors)}, error against the truth median "
              f"{np.median(errors):.1f} mm, max {errors.max():.1f} mm")
    return 0 if state["last"] else 1


if __name__ == "__main__":
    sys.exit(main())
