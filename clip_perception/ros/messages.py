"""Conversions between ROS messages and the core library's types.

Only message plumbing lives here; decisions are made by :mod:`detector`.
vision_msgs is optional: :data:`vision_msgs` is None where it is not installed.
"""

from __future__ import annotations

import sys

import numpy as np
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from ..core.detect.results import Detection, TargetResult
from ..core.io.image_formats import Frame, frame_from_buffer

try:  # present on a ROS 2 install; absent in the pip-only environment
    import vision_msgs.msg as vision_msgs
except ImportError:  # pragma: no cover - depends on the machine
    vision_msgs = None


def frame_from_image(msg: Image) -> Frame:
    """A zero-copy view of an Image message's pixels (raises ImageFormatError)."""
    return frame_from_buffer(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                             msg.is_bigendian)


def region(target: TargetResult) -> RegionOfInterest:
    """The target's region as a RegionOfInterest in pixels of the frame."""
    x0, y0, x1, y1 = target.box
    return RegionOfInterest(x_offset=int(x0), y_offset=int(y0), height=int(y1 - y0),
                            width=int(x1 - x0), do_rectify=False)


def rgb_image(pixels: np.ndarray, header: Header) -> Image:
    """An rgb8 Image message holding ``pixels`` ``(H, W, 3)`` uint8."""
    h, w = pixels.shape[:2]
    return Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                 step=w * 3, data=np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())


def heatmap_image(detection: Detection, header: Header) -> Image:
    """A 32FC1 Image at frame size: per pixel, the highest target probability."""
    heat = np.max(np.stack(detection.heatmaps), axis=0).astype(np.float32)
    cell = detection.heatmap_cell  # each cell covers cell x cell pixels from the top left
    full = heat.repeat(cell, axis=0).repeat(cell, axis=1)[: detection.height, : detection.width]
    full = np.ascontiguousarray(np.clip(full, 0.0, 1.0))
    return Image(header=header, height=detection.height, width=detection.width,
                 encoding="32FC1", is_bigendian=int(sys.byteorder == "big"),
                 step=detection.width * 4, data=full.tobytes())


def detection_array(detection: Detection, header: Header, msgs=None, ids=None):
    """A vision_msgs/Detection2DArray with one detection per found target.

    ``class_id`` is the target phrase, ``score`` its probability and the bbox
    the target's region (centre and size, pixels); ``id`` is the target's track
    id from ``ids`` (one per target), else the phrase. ``msgs`` defaults to
    ``vision_msgs.msg``; returns None when that is not installed.
    """
    msgs = msgs or vision_msgs
    if msgs is None:
        return None
    array = msgs.Detection2DArray(header=header)
    for i, target in enumerate(detection.targets):
        if not target.present:
            continue
        x0, y0, x1, y1 = target.box
        item = msgs.Detection2D(header=header)
        item.id = (ids[i] if ids is not None and ids[i] else None) or target.phrase
        hypothesis = msgs.ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = target.phrase
        hypothesis.hypothesis.score = float(target.score)
        item.results.append(hypothesis)
        item.bbox.center.position.x = (x0 + x1) / 2.0
        item.bbox.center.position.y = (y0 + y1) / 2.0
        item.bbox.size_x = float(x1 - x0)
        item.bbox.size_y = float(y1 - y0)
        array.detections.append(item)
    return array


def stamp_ns(header) -> int:
    """A header's stamp in integer nanoseconds."""
    return header.stamp.sec * 10**9 + header.stamp.nanosec
