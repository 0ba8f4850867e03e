"""Labelled bags: camera frames plus ground truth, for ``evaluate --bag``.

A labelled bag holds sensor_msgs/Image frames and, on ``/labels``, one
std_msgs/String per frame at the same bag time with JSON
``{"target": "red mug", "box": [x0, y0, x1, y1]}`` (``"box": null`` when the
target is not in view). Read without ROS, with ``rosbags``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..core.image_formats import frame_from_buffer
from ..testing.scenes import Scene
from .bag_writer import LABELS_TOPIC, write_bag


def label_json(scene: Scene) -> str:
    return json.dumps({"target": scene.target,
                       "box": list(scene.target_box) if scene.target_box else None})


def write_labelled_bag(path: str | Path, scenes: Iterable[Scene], start_ns: int = 10**18,
                       step_ns: int = 10**8, storage: str = "sqlite3") -> Path:
    """Scenes as frames every ``step_ns`` with their labels."""
    scenes = list(scenes)
    times = [start_ns + i * step_ns for i in range(len(scenes))]
    return write_bag(path, [(t, s.image) for t, s in zip(times, scenes)],
                     labels=[(t, label_json(s)) for t, s in zip(times, scenes)],
                     storage=storage)


def read_labelled_bag(path: str | Path, image_topic: str | None = None) -> list[Scene]:
    """Frames that have a label at the same bag time, as :class:`Scene` objects.

    ``image_topic`` defaults to the bag's only sensor_msgs/Image topic.
    """
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    images, labels = {}, {}
    with Reader(Path(path)) as reader:
        image_topics = sorted({c.topic for c in reader.connections
                               if c.msgtype == "sensor_msgs/msg/Image"})
        if image_topic is None:
            if len(image_topics) != 1:
                raise ValueError(f"give image_topic: the bag has image topics {image_topics}")
            image_topic = image_topics[0]
        wanted = [c for c in reader.connections if c.topic in (image_topic, LABELS_TOPIC)]
        for conn, stamp, raw in reader.messages(connections=wanted):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == LABELS_TOPIC:
                labels[stamp] = json.loads(msg.data)
            else:
                frame = frame_from_buffer(msg.encoding, msg.height, msg.width, msg.step,
                                          msg.data.tobytes())
                images[stamp] = frame.to_rgb()
    scenes = []
    for stamp in sorted(set(images) & set(labels)):
        box = labels[stamp].get("box")
        scenes.append(Scene(images[stamp], labels[stamp]["target"],
                            tuple(int(v) for v in box) if box else None))
    return scenes
