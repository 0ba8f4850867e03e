"""Write rosbag2 bags of frames and commands with ``rosbags`` (no ROS install needed).

Used by the demo, the bag replay test, and anyone who wants a test bag.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

LABELS_TOPIC = "/labels"


def write_bag(
    path: str | Path,
    frames: Iterable[tuple[int, np.ndarray]],
    commands: Iterable[tuple[int, str]] = (),
    image_topic: str = "/camera/image_raw",
    command_topic: str = "/command",
    frame_id: str = "camera",
    storage: str = "sqlite3",
    labels: Iterable[tuple[int, str]] = (),
) -> Path:
    """Write ``(time_ns, rgb)`` frames as sensor_msgs/Image and ``(time_ns, text)``
    commands as std_msgs/String into a new bag directory at ``path``.

    Each image's header stamp is its bag time, as a camera driver would record it.
    ``labels`` (std_msgs/String on ``/labels``) carry ground truth for
    :mod:`clip_perception.tools.labelled_bag`.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    String = store.types["std_msgs/msg/String"]
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    path = Path(path)
    items: list[tuple[int, str, object]] = []
    for t, rgb in frames:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        header = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id=frame_id)
        items.append((t, "image", Image(header=header, height=h, width=w, encoding="rgb8",
                                        is_bigendian=0, step=w * 3, data=rgb.reshape(-1))))
    for t, text in commands:
        items.append((t, "command", String(data=text)))
    for t, text in labels:
        items.append((t, "labels", String(data=text)))
    items.sort(key=lambda item: item[0])

    topics = {"image": (image_topic, "sensor_msgs/msg/Image"),
              "command": (command_topic, "std_msgs/msg/String"),
              "labels": (LABELS_TOPIC, "std_msgs/msg/String")}
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        connections = {kind: writer.add_connection(*topics[kind], typestore=store)
                       for kind in dict.fromkeys(kind for _, kind, _ in items)}
        for t, kind, msg in items:
            writer.write(connections[kind], t, store.serialize_cdr(msg, topics[kind][1]))
    return path
