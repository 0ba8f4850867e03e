"""Write rosbag2 bags of frames and commands with ``rosbags`` (no ROS install needed).

Colour as sensor_msgs/Image (rgb8) or, with ``image_format`` jpeg/png, as
sensor_msgs/CompressedImage on ``<image_topic>/compressed`` (image_transport's
naming); optionally depth (16UC1 mm or 32FC1 m) and the colour camera's
CameraInfo with every frame. Used by the demo, the bag replay tests, and
anyone who wants a test bag.
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
    image_format: str = "raw",
    depth: Iterable[tuple[int, np.ndarray]] = (),
    depth_encoding: str = "16UC1",
    depth_topic: str = "/camera/depth/image_raw",
    camera=None,
    camera_info_topic: str = "/camera/camera_info",
) -> Path:
    """Write ``(time_ns, rgb)`` frames and ``(time_ns, text)`` commands (std_msgs/String)
    into a new bag directory at ``path``.

    ``image_format``: ``raw`` (sensor_msgs/Image on ``image_topic``) or ``jpeg`` /
    ``png`` (sensor_msgs/CompressedImage on ``image_topic + "/compressed"``).
    ``depth``: ``(time_ns, metres)`` frames (NaN or 0 = no reading) as
    ``depth_encoding`` Images. ``camera``: a
    :class:`~clip_perception.core.spatial.camera_model.PinholeCamera` written as
    CameraInfo at every colour frame's time. Each header stamp is its bag
    time, as a camera driver would record it; every message has ``frame_id``.
    ``labels`` (std_msgs/String on ``/labels``) carry ground truth for
    :mod:`clip_perception.tools.labelled_bag`.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from ..core.io.compressed import encode_compressed
    from ..core.spatial.depth import encode_depth

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    String = store.types["std_msgs/msg/String"]
    CompressedImage = store.types["sensor_msgs/msg/CompressedImage"]
    CameraInfo = store.types["sensor_msgs/msg/CameraInfo"]
    RegionOfInterest = store.types["sensor_msgs/msg/RegionOfInterest"]
    if image_format not in ("raw", "jpeg", "png"):
        raise ValueError(f"image_format {image_format!r}: raw, jpeg or png")
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    path = Path(path)
    items: list[tuple[int, str, object]] = []
    def header(t: int):
        return Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id=frame_id)

    for t, rgb in frames:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        if camera is not None:
            k = np.array([camera.fx, 0, camera.cx, 0, camera.fy, camera.cy, 0, 0, 1], float)
            p = np.array([camera.fx, 0, camera.cx, 0, 0, camera.fy, camera.cy, 0, 0, 0, 1, 0],
                         float)
            items.append((t, "camera_info", CameraInfo(
                header=header(t), height=camera.height, width=camera.width,
                distortion_model="plumb_bob", d=np.zeros(5), k=k, r=np.eye(3).reshape(-1),
                p=p, binning_x=0, binning_y=0,
                roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0,
                                     do_rectify=False))))
        if image_format == "raw":
            items.append((t, "image", Image(header=header(t), height=h, width=w,
                                            encoding="rgb8", is_bigendian=0, step=w * 3,
                                            data=rgb.reshape(-1))))
        else:
            data = np.frombuffer(encode_compressed(rgb, image_format), np.uint8)
            items.append((t, "image", CompressedImage(header=header(t), format=image_format,
                                                      data=data)))
    for t, metres in depth:
        data, step = encode_depth(metres, depth_encoding)
        h, w = np.shape(metres)
        items.append((t, "depth", Image(header=header(t), height=h, width=w,
                                        encoding=depth_encoding, is_bigendian=0, step=step,
                                        data=np.frombuffer(data, np.uint8))))
    for t, text in commands:
        items.append((t, "command", String(data=text)))
    for t, text in labels:
        items.append((t, "labels", String(data=text)))
    order = {"camera_info": 0, "depth": 1, "image": 2, "command": 3, "labels": 4}
    items.sort(key=lambda item: (item[0], order[item[1]]))

    compressed = image_format != "raw"
    topics = {"image": ((image_topic + "/compressed", "sensor_msgs/msg/CompressedImage")
                        if compressed else (image_topic, "sensor_msgs/msg/Image")),
              "depth": (depth_topic, "sensor_msgs/msg/Image"),
              "camera_info": (camera_info_topic, "sensor_msgs/msg/CameraInfo"),
              "command": (command_topic, "std_msgs/msg/String"),
              "labels": (LABELS_TOPIC, "std_msgs/msg/String")}
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        connections = {kind: writer.add_connection(*topics[kind], typestore=store)
                       for kind in dict.fromkeys(kind for _, kind, _ in items)}
        for t, kind, msg in items:
            writer.write(connections[kind], t, store.serialize_cdr(msg, topics[kind][1]))
    return path
