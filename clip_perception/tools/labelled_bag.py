"""Labelled bags: camera frames plus ground truth, for ``evaluate --bag``.

A labelled bag holds colour frames (sensor_msgs/Image, or CompressedImage
jpeg/png) and, on ``/labels``, one std_msgs/String per frame at the same bag
time with JSON ``{"target": "red mug", "box": [x0, y0, x1, y1]}`` (``"box":
null`` when the target is not in view). An RGB-D labelled bag also holds
depth (16UC1 or 32FC1, registered to colour) and CameraInfo at the same bag
times, and its labels add ``"position": [x, y, z]``, the target's
visible-surface centre in metres in the optical frame. Read without ROS,
with ``rosbags``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..core.io.compressed import decode_compressed
from ..core.io.image_formats import frame_from_buffer
from ..core.spatial.camera_model import PinholeCamera
from ..core.spatial.depth import decode_depth
from ..testing.rgbd_scenes import RgbdScene
from ..testing.scenes import Scene
from .bag_writer import LABELS_TOPIC, write_bag

COLOUR_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
DEPTH_ENCODINGS = ("16UC1", "32FC1", "mono16")


def label_json(scene: Scene, position=None) -> str:
    label = {"target": scene.target,
             "box": list(scene.target_box) if scene.target_box else None}
    if position is not None:
        label["position"] = [float(v) for v in position]
    return json.dumps(label)


def write_labelled_bag(path: str | Path, scenes: Iterable[Scene], start_ns: int = 10**18,
                       step_ns: int = 10**8, storage: str = "sqlite3",
                       image_format: str = "raw") -> Path:
    """Scenes as frames every ``step_ns`` with their labels."""
    scenes = list(scenes)
    times = [start_ns + i * step_ns for i in range(len(scenes))]
    return write_bag(path, [(t, s.image) for t, s in zip(times, scenes)],
                     labels=[(t, label_json(s)) for t, s in zip(times, scenes)],
                     storage=storage, image_format=image_format)


def write_labelled_rgbd_bag(path: str | Path, scenes: Iterable[RgbdScene],
                            start_ns: int = 10**18, step_ns: int = 10**8,
                            image_format: str = "jpeg", depth_encoding: str = "16UC1",
                            storage: str = "sqlite3") -> Path:
    """RGB-D scenes (one camera) as colour, depth, camera_info and labels with positions."""
    scenes = list(scenes)
    times = [start_ns + i * step_ns for i in range(len(scenes))]
    return write_bag(path, [(t, s.image) for t, s in zip(times, scenes)],
                     labels=[(t, label_json(s.scene, s.truth)) for t, s in zip(times, scenes)],
                     depth=[(t, s.depth) for t, s in zip(times, scenes)],
                     depth_encoding=depth_encoding, camera=scenes[0].camera if scenes else None,
                     image_format=image_format, storage=storage)


def _colour(msg, msgtype: str) -> np.ndarray:
    if msgtype.endswith("CompressedImage"):
        return decode_compressed(msg.format, msg.data.tobytes()).to_rgb()
    return frame_from_buffer(msg.encoding, msg.height, msg.width, msg.step,
                             msg.data.tobytes()).to_rgb()


def _read(path: str | Path, image_topic: str | None):
    """Per bag time: colour images, labels, depth (metres) and cameras."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    images, labels, depths, cameras = {}, {}, {}, {}
    with Reader(Path(path)) as reader:
        if image_topic is None:
            colour = sorted({c.topic for c in reader.connections if c.msgtype in COLOUR_TYPES
                             and "depth" not in c.topic})
            if len(colour) != 1:
                raise ValueError(f"give image_topic: the bag has colour topics {colour}")
            image_topic = colour[0]
        for conn, stamp, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == LABELS_TOPIC:
                labels[stamp] = json.loads(msg.data)
            elif conn.topic == image_topic:
                images[stamp] = _colour(msg, conn.msgtype)
            elif conn.msgtype == "sensor_msgs/msg/Image" and msg.encoding in DEPTH_ENCODINGS:
                depths[stamp] = decode_depth(msg.encoding, msg.height, msg.width, msg.step,
                                             msg.data.tobytes(), msg.is_bigendian)
            elif conn.msgtype == "sensor_msgs/msg/CameraInfo":
                cameras[stamp] = PinholeCamera.from_k(msg.k, msg.width, msg.height)
    return images, labels, depths, cameras


def _scene(image, label) -> Scene:
    box = label.get("box")
    return Scene(image, label["target"], tuple(int(v) for v in box) if box else None)


def read_labelled_bag(path: str | Path, image_topic: str | None = None) -> list[Scene]:
    """Frames that have a label at the same bag time, as :class:`Scene` objects.

    ``image_topic`` defaults to the bag's only colour topic (Image or CompressedImage).
    """
    images, labels, _, _ = _read(path, image_topic)
    return [_scene(images[t], labels[t]) for t in sorted(set(images) & set(labels))]


def read_labelled_rgbd_bag(path: str | Path, image_topic: str | None = None
                           ) -> list[RgbdScene]:
    """Frames with a label, depth and camera_info at the same bag time, as RGB-D scenes."""
    images, labels, depths, cameras = _read(path, image_topic)
    scenes = []
    for t in sorted(set(images) & set(labels) & set(depths) & set(cameras)):
        position = labels[t].get("position")
        scenes.append(RgbdScene(_scene(images[t], labels[t]), depths[t], cameras[t], {},
                                np.array(position) if position is not None else None))
    return scenes
