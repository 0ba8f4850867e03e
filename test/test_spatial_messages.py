"""Message conversions for RGB-D inputs and 3D outputs (rclpy message classes, no DDS)."""

from __future__ import annotations

import types

import numpy as np
import pytest
from std_msgs.msg import Header

from clip_perception.core.detect.results import Detection, TargetResult
from clip_perception.core.io.compressed import CompressedImageError, encode_compressed
from clip_perception.core.spatial.camera_model import CameraModelError
from clip_perception.core.spatial.locate3d import DepthInvalid, Position3D
from clip_perception.ros.spatial_messages import (
    UNKNOWN_ROTATION_VARIANCE,
    MarkerTracker,
    camera_from_info,
    depth_from_image,
    detection3d_array,
    frame_from_compressed,
    target_pose,
)


def _detection(present=(True, True)):
    targets = [TargetResult(f"t{i}", p, 0.9 if p else 0.1, float("nan"), (10, 20, 50, 60),
                            (0, 0, 64, 64), np.zeros(1)) for i, p in enumerate(present)]
    return Detection(targets, np.zeros((1, 4)), 640, 480)


def _position(x=0.1, y=-0.2, z=1.5):
    cov = np.diag([1e-4, 2e-4, 3e-4])
    cov[0, 2] = cov[2, 0] = 5e-5
    return Position3D(np.array([x, y, z]), cov, np.array([0.08, 0.06, 0.02]), 100, 90)


def _header(sec=7):
    header = Header(frame_id="cam_optical")
    header.stamp.sec = sec
    return header


def test_target_pose_carries_the_header_position_and_the_covariance_convention():
    msg = target_pose(_position(), _header())
    assert msg.header.frame_id == "cam_optical" and msg.header.stamp.sec == 7
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    assert (p.x, p.y, p.z) == (0.1, -0.2, 1.5)
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0), "orientation unknown: identity"
    cov = np.array(msg.pose.covariance).reshape(6, 6)
    assert np.allclose(cov[:3, :3], _position().covariance)
    assert np.allclose(cov[3:, 3:], np.eye(3) * UNKNOWN_ROTATION_VARIANCE)
    assert not cov[:3, 3:].any() and not cov[3:, :3].any()


def test_markers_label_found_targets_and_delete_those_no_longer_found():
    from visualization_msgs.msg import Marker

    tracker = MarkerTracker()
    det = _detection((True, True))
    first = tracker.markers(det, [_position(), _position(x=-0.3)], _header(1)).markers
    assert [(m.id, m.type, m.action) for m in first] == [
        (0, Marker.CUBE, Marker.ADD), (1, Marker.TEXT_VIEW_FACING, Marker.ADD),
        (2, Marker.CUBE, Marker.ADD), (3, Marker.TEXT_VIEW_FACING, Marker.ADD)]
    assert first[1].text == "t0 0.90" and first[0].header.stamp.sec == 1
    assert (first[0].scale.x, first[0].scale.y) == pytest.approx((0.08, 0.06))
    assert first[1].pose.position.y < first[0].pose.position.y, "label above (y is down)"
    # t1 now has no valid depth: its markers are deleted, t0's stay under the same ids.
    second = tracker.markers(det, [_position(), DepthInvalid("depth_zero", "")], _header(2))
    assert [(m.id, m.action) for m in second.markers] == [
        (0, Marker.ADD), (1, Marker.ADD), (2, Marker.DELETE), (3, Marker.DELETE)]
    third = tracker.markers(_detection((False, False)), [None, None], _header(3))
    assert [(m.id, m.action) for m in third.markers] == [(0, Marker.DELETE), (1, Marker.DELETE)]
    assert tracker.markers(_detection((False, False)), [None, None], _header(4)).markers == []


def _fake_vision_msgs():
    """Classes with vision_msgs' (Humble and later) Detection3D field layout."""
    ns = types.SimpleNamespace

    def pose():
        return ns(position=ns(x=0.0, y=0.0, z=0.0), orientation=ns(x=0.0, y=0.0, z=0.0, w=0.0))

    class Detection3DArray:
        def __init__(self, header=None):
            self.header, self.detections = header, []

    class Detection3D:
        def __init__(self, header=None):
            self.header, self.id, self.results = header, "", []
            self.bbox = ns(center=pose(), size=ns(x=0.0, y=0.0, z=0.0))

    class ObjectHypothesisWithPose:
        def __init__(self):
            self.hypothesis = ns(class_id="", score=0.0)
            self.pose = ns(pose=pose(), covariance=[0.0] * 36)

    return ns(Detection3DArray=Detection3DArray, Detection3D=Detection3D,
              ObjectHypothesisWithPose=ObjectHypothesisWithPose)


def test_detection3d_array_has_one_detection_per_target_with_a_position():
    header = _header()
    located = [_position(), DepthInvalid("depth_nan", "")]
    array = detection3d_array(_detection(), located, header, msgs=_fake_vision_msgs())
    assert array.header is header and len(array.detections) == 1
    d = array.detections[0]
    assert d.header is header and d.id == "t0"
    h = d.results[0]
    assert h.hypothesis.class_id == "t0" and h.hypothesis.score == pytest.approx(0.9)
    assert (h.pose.pose.position.z, h.pose.pose.orientation.w) == (1.5, 1.0)
    assert h.pose.covariance[35] == UNKNOWN_ROTATION_VARIANCE
    assert (d.bbox.center.position.x, d.bbox.size.x) == (0.1, 0.08)


def test_detection3d_array_uses_real_vision_msgs_where_installed():
    vision_msgs = pytest.importorskip(
        "vision_msgs.msg", reason="vision_msgs is not installable from PyPI; runs on ROS installs")
    array = detection3d_array(_detection(), [_position(), _position(z=2.0)], _header())
    assert isinstance(array, vision_msgs.Detection3DArray) and len(array.detections) == 2
    assert array.detections[1].bbox.center.position.z == 2.0


def test_camera_info_zero_focal_length_is_an_error():
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(width=640, height=480)
    with pytest.raises(CameraModelError):
        camera_from_info(info)
    info.k = [600.0, 0.0, 320.0, 0.0, 600.0, 240.0, 0.0, 0.0, 1.0]
    cam = camera_from_info(info)
    assert (cam.fx, cam.cy, cam.width) == (600.0, 240.0, 640)


def test_compressed_and_depth_messages_decode():
    from sensor_msgs.msg import CompressedImage, Image

    from clip_perception.core.spatial.depth import encode_depth

    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[:, :8] = (200, 30, 30)
    msg = CompressedImage(format="png", data=encode_compressed(rgb, "png"))
    assert np.array_equal(frame_from_compressed(msg).to_rgb(), rgb)
    with pytest.raises(CompressedImageError):
        frame_from_compressed(CompressedImage(format="jpeg", data=b"\xff\xd8junk"))
    data, step = encode_depth(np.full((4, 5), 1.25), "16UC1")
    depth = depth_from_image(Image(height=4, width=5, encoding="16UC1", step=step, data=data))
    assert depth.shape == (4, 5) and float(depth[0, 0]) == pytest.approx(1.25)


def test_camera_info_of_a_rectified_image_uses_p_as_image_geometry_does():
    """A rectified image (P differs from K) is projected with P's focal lengths and centre;
    P all zero (an uncalibrated driver) or equal to K falls back to K."""
    from sensor_msgs.msg import CameraInfo

    k = [600.0, 0.0, 320.0, 0.0, 600.0, 240.0, 0.0, 0.0, 1.0]
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob", k=k)
    info.d = [-0.3, 0.1, 0.0, 0.0, 0.0]
    info.p = [580.0, 0.0, 318.0, 0.0, 0.0, 585.0, 236.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    cam = camera_from_info(info)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (580.0, 585.0, 318.0, 236.0)
    info.p = [600.0, 0.0, 320.0, 0.0, 0.0, 600.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert camera_from_info(info).fx == 600.0
    info.p = [0.0] * 12
    assert (camera_from_info(info).fx, camera_from_info(info).cx) == (600.0, 320.0)


def test_mono16_depth_is_millimetres():
    from sensor_msgs.msg import Image

    mm = np.array([[0, 1500], [2500, 65535]], dtype="<u2")
    msg = Image(height=2, width=2, encoding="mono16", is_bigendian=0, step=4, data=mm.tobytes())
    metres = depth_from_image(msg)
    assert metres[0, 1] == pytest.approx(1.5) and metres[1, 0] == pytest.approx(2.5)


def test_target_pose_is_the_tracks_filtered_one_only_on_frames_with_a_3d_position():
    """A stable track's filtered pose is published for frames whose depth gave the target
    a position; a frame without (depth or camera_info missing) publishes no target_pose,
    as docs/faults.md promises (the filtered pose of an earlier frame was published)."""
    from clip_perception.ros.spatial_outputs import SpatialOutputs

    track = types.SimpleNamespace(point=(0.1, 0.0, 1.0), covariance=np.eye(3).ravel() * 1e-4,
                                  size=(0.05, 0.05, 0.05))
    tracks = types.SimpleNamespace(targets=[types.SimpleNamespace(stable=True, track=track)])
    measured = Position3D(np.array([0.11, 0.0, 1.0]), np.eye(3) * 1e-4, np.ones(3) * 0.05, 9, 9)
    pose = SpatialOutputs._pose([measured], tracks)
    assert pose is not None and np.allclose(pose.point, track.point)  # the filtered one
    assert SpatialOutputs._pose([DepthInvalid("camera_info_missing", "none yet")], tracks) \
        is None
    assert SpatialOutputs._pose([DepthInvalid("depth_missing", "none")], None) is None
    assert SpatialOutputs._pose([measured], None) is measured
