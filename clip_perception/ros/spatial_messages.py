"""Conversions for RGB-D inputs and 3D outputs.

Inputs: CompressedImage -> Frame, depth Image -> metres, CameraInfo ->
:class:`~clip_perception.core.spatial.camera_model.PinholeCamera`.
Outputs: PoseWithCovarianceStamped, MarkerArray, vision_msgs/Detection3DArray
(where vision_msgs is installed), and the ``result`` JSON String.

Orientation convention: the node does not estimate an object's orientation.
Every pose has the identity quaternion and a rotational variance of
:data:`UNKNOWN_ROTATION_VARIANCE` (rad^2) on the diagonal, with zero
cross-covariance: "orientation unknown", as robot_localization and other
consumers of PoseWithCovariance read it. The position block (rows/columns
0-2, m^2) is :mod:`~clip_perception.core.spatial.locate3d`'s covariance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from visualization_msgs.msg import Marker, MarkerArray

from ..core.detect.results import Detection
from ..core.io.compressed import decode_compressed
from ..core.io.image_formats import Frame
from ..core.io.result_json import FrameResult, result_json
from ..core.spatial.camera_model import PinholeCamera
from ..core.spatial.depth import decode_depth
from ..core.spatial.locate3d import Position3D
from .messages import vision_msgs

UNKNOWN_ROTATION_VARIANCE = 1.0e6  # rad^2: orientation unknown
MARKER_NS = "clip_perception"
FOUND_RGBA = (0.1, 0.9, 0.2, 0.6)
TEXT_RGBA = (1.0, 1.0, 1.0, 1.0)


# --- inputs ---------------------------------------------------------------------------
def frame_from_compressed(msg: CompressedImage) -> Frame:
    """Decode a CompressedImage (raises CompressedImageError)."""
    return decode_compressed(msg.format, msg.data)


def depth_from_image(msg: Image) -> np.ndarray:
    """Metres from a 16UC1 or mono16 (both millimetres) or 32FC1 Image (raises
    DepthFormatError)."""
    return decode_depth(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data),
                        msg.is_bigendian)


def camera_from_info(msg: CameraInfo) -> PinholeCamera:
    """The colour camera's intrinsics, from ``p`` for a rectified image and ``k`` otherwise
    (:meth:`PinholeCamera.from_info`; raises CameraModelError, e.g. a zero focal length)."""
    return PinholeCamera.from_info(msg.k, msg.p, msg.width, msg.height)


# --- outputs --------------------------------------------------------------------------
def pose_covariance(position: np.ndarray) -> list[float]:
    """PoseWithCovariance's 6x6 row-major covariance: position block + unknown orientation."""
    cov = np.zeros((6, 6))
    cov[:3, :3] = position
    cov[3:, 3:] = np.eye(3) * UNKNOWN_ROTATION_VARIANCE
    return [float(v) for v in cov.reshape(-1)]


def _set_pose(pose, point: np.ndarray) -> None:
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in point)
    pose.orientation.x = pose.orientation.y = pose.orientation.z = 0.0
    pose.orientation.w = 1.0


def target_pose(position: Position3D, header) -> PoseWithCovarianceStamped:
    """The target's pose in the colour frame's optical frame, with its covariance."""
    msg = PoseWithCovarianceStamped(header=header)
    _set_pose(msg.pose.pose, position.point)
    msg.pose.covariance = pose_covariance(position.covariance)
    return msg


def result_string(result: FrameResult) -> String:
    return String(data=result_json(result))


class MarkerTracker:
    """Builds each frame's MarkerArray and deletes markers of targets no longer found.

    Each phrase (or track, with tracking) keeps two marker ids (a cube and its
    text label) for the node's life, so a planner's RViz display updates in place.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._shown: set[int] = set()

    def _id(self, phrase: str) -> int:
        if phrase not in self._ids:
            self._ids[phrase] = 2 * len(self._ids)
        return self._ids[phrase]

    def markers(self, detection: Detection, located: Sequence, header,
                keys: Sequence[str | None] | None = None) -> MarkerArray:
        """``keys``: per target, what its marker ids belong to (a track id), default
        the phrase."""
        array = MarkerArray()
        shown: set[int] = set()
        for i, (target, loc) in enumerate(zip(detection.targets, located)):
            if not isinstance(loc, Position3D):
                continue
            key = keys[i] if keys is not None and keys[i] else target.phrase
            base = self._id(key)
            cube = Marker(header=header, ns=MARKER_NS, id=base, type=Marker.CUBE,
                          action=Marker.ADD)
            _set_pose(cube.pose, loc.point)
            cube.scale.x, cube.scale.y, cube.scale.z = (float(max(v, 0.005)) for v in loc.size)
            cube.color.r, cube.color.g, cube.color.b, cube.color.a = FOUND_RGBA
            text = Marker(header=header, ns=MARKER_NS, id=base + 1,
                          type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                          text=f"{target.phrase} {target.score:.2f}")
            above = loc.point - np.array([0.0, loc.size[1] / 2 + 0.03, 0.0])  # y is down
            _set_pose(text.pose, above)
            text.scale.z = 0.04
            text.color.r, text.color.g, text.color.b, text.color.a = TEXT_RGBA
            array.markers.extend([cube, text])
            shown.update((base, base + 1))
        for old in sorted(self._shown - shown):
            array.markers.append(Marker(header=header, ns=MARKER_NS, id=old,
                                        action=Marker.DELETE))
        self._shown = shown
        return array


def detection3d_array(detection: Detection, located: Sequence, header, msgs=None):
    """vision_msgs/Detection3DArray: one detection per found target with a 3D position.

    ``class_id`` is the phrase, ``score`` its probability, the hypothesis pose
    the position with :func:`pose_covariance`; the bbox is centred there with
    the marker's size. ``msgs`` defaults to ``vision_msgs.msg``; returns None
    when that is not installed.
    """
    msgs = msgs or vision_msgs
    if msgs is None:
        return None
    array = msgs.Detection3DArray(header=header)
    for target, loc in zip(detection.targets, located):
        if not isinstance(loc, Position3D):
            continue
        item = msgs.Detection3D(header=header)
        item.id = target.phrase
        hypothesis = msgs.ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = target.phrase
        hypothesis.hypothesis.score = float(target.score)
        _set_pose(hypothesis.pose.pose, loc.point)
        hypothesis.pose.covariance = pose_covariance(loc.covariance)
        item.results.append(hypothesis)
        _set_pose(item.bbox.center, loc.point)
        item.bbox.size.x, item.bbox.size.y, item.bbox.size.z = (float(v) for v in loc.size)
        array.detections.append(item)
    return array
