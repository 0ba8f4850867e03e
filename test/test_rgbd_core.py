"""Depth decoding, the camera model, 3D location and the result document (no ROS)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from clip_perception.core.io.result_json import (
    SCHEMA,
    ResultSchemaError,
    parse_result,
    result_json,
)
from clip_perception.core.spatial.camera_model import CameraModelError, PinholeCamera
from clip_perception.core.spatial.depth import DepthFormatError, decode_depth, encode_depth
from clip_perception.core.spatial.locate3d import (
    REASON_CAMERA_INFO,
    REASON_NAN,
    REASON_RANGE,
    REASON_SIZE,
    REASON_ZERO,
    DepthInvalid,
    Position3D,
    locate,
)
from clip_perception.testing.rgbd_scenes import face_centre, make_rgbd_scene, random_camera

CAM = PinholeCamera(525.0, 525.0, 319.5, 239.5, 640, 480)


def within_goal(point, truth) -> bool:
    """The issue's goal: error <= 2 cm or <= 2% of the distance, whichever is larger."""
    return np.linalg.norm(point - truth) <= max(0.02, 0.02 * np.linalg.norm(truth))


# --- depth decoding ---------------------------------------------------------------
def test_16uc1_is_millimetres_and_32fc1_is_metres_with_padding_and_byte_order():
    mm = np.array([[1000, 0, 2500], [400, 65535, 1]], "<u2")
    padded = np.zeros((2, 4), "<u2")
    padded[:, :3] = mm
    out = decode_depth("16UC1", 2, 3, 8, padded.tobytes())
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, mm / 1000.0, rtol=1e-6)
    big = decode_depth("16UC1", 2, 3, 6, mm.astype(">u2").tobytes(), is_bigendian=1)
    np.testing.assert_allclose(big, out)
    m = np.array([[1.25, np.nan, np.inf], [0.0, -1.0, 3.5]], "<f4")
    f = decode_depth("32FC1", 2, 3, 12, m.tobytes())
    assert f[0, 0] == pytest.approx(1.25) and f[1, 2] == pytest.approx(3.5)
    assert np.isnan(f[0, 1]) and np.isnan(f[0, 2]) and np.isnan(f[1, 1])
    assert f[1, 0] == 0.0, "a zero reading stays zero (its own reason)"


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_encode_decode_round_trip(encoding):
    rng = np.random.default_rng(0)
    metres = rng.uniform(0.3, 5.0, (7, 9)).astype(np.float32)
    metres[2, 3] = 0.0
    data, step = encode_depth(metres, encoding)
    back = decode_depth(encoding, 7, 9, step, data)
    np.testing.assert_allclose(back, metres, atol=0.0005 if encoding == "16UC1" else 1e-6)


@pytest.mark.parametrize("args", [
    ("rgb8", 2, 2, 4, b"\0" * 8),          # not a depth encoding
    ("16UC1", 2, 2, 3, b"\0" * 6),         # step shorter than a row
    ("16UC1", 2, 2, 4, b"\0" * 5),         # too few bytes
    ("32FC1", 0, 2, 8, b""),               # empty
    ("32FC1", 2, 2, 8, b"\0" * 24),        # too many bytes
])
def test_bad_depth_buffers_raise_a_clear_error(args):
    with pytest.raises(DepthFormatError):
        decode_depth(*args)


# --- camera model -----------------------------------------------------------------
def test_zero_or_non_finite_focal_length_is_refused():
    for k in ([0, 0, 320, 0, 0, 240, 0, 0, 1], [525, 0, 320, 0, 0, 240, 0, 0, 1],
              [math.nan, 0, 320, 0, 525, 240, 0, 0, 1]):
        with pytest.raises(CameraModelError):
            PinholeCamera.from_k(k, 640, 480)
    with pytest.raises(CameraModelError):
        PinholeCamera.from_k([525, 0, 320, 0, 525, 240, 0, 0, 1], 0, 480)


def test_backprojection_inverts_projection_and_scales_with_resolution():
    cam = PinholeCamera.from_k([600, 0, 330, 0, 610, 250, 0, 0, 1], 640, 480)
    p = cam.backproject(100.0, 400.0, 1.7)
    assert cam.project(p) == pytest.approx((100.0, 400.0))
    # Pixel centres at whole coordinates: half-resolution pixel (50, 200) covers
    # full-resolution pixels 100..101 x 400..401, so its centre is their shared corner.
    corner = cam.backproject(100.5, 400.5, 1.7)
    assert cam.scaled(320, 240).project(corner) == pytest.approx((50.0, 200.0))
    # ...and the ray through a pixel's centre is the same at any resolution.
    for w, h in ((320, 240), (1280, 960), (424, 240)):
        other = cam.scaled(w, h)
        sx, sy = w / 640, h / 480
        u, v = (100 + 0.5) * sx - 0.5, (400 + 0.5) * sy - 0.5
        assert np.allclose(other.ray(u, v), cam.ray(100.0, 400.0))


# --- 3D location ------------------------------------------------------------------
def _plane_scene(z_obj=1.0, z_back=2.5, box=(300, 200, 360, 260)):
    depth = np.full((480, 640), z_back, np.float32)
    x0, y0, x1, y1 = box
    depth[y0:y1, x0:x1] = z_obj
    return depth


def test_background_in_an_oversized_region_does_not_pull_the_point_back():
    obj = (300, 200, 360, 260)
    depth = _plane_scene(box=obj)
    truth = face_centre(obj, 1.0, CAM)
    for grow in (0, 10, 20, 25):  # up to a box of 3.4 times the object's area (unweighted)
        box = (obj[0] - grow, obj[1] - grow, obj[2] + grow, obj[3] + grow)
        loc = locate(depth, box, (640, 480), CAM)
        assert isinstance(loc, Position3D)
        assert np.linalg.norm(loc.point - truth) < 0.002, grow


def test_a_region_that_cuts_the_object_still_gives_the_whole_faces_centre():
    obj = (300, 200, 360, 260)
    depth = _plane_scene(box=obj)
    depth[200:260, 366:400] = 1.0  # another face at the same depth, 6 px away
    depth[230, 300:360:3] = 0.0    # missing readings across the face
    truth = face_centre(obj, 1.0, CAM)
    # Cut by up to a quarter of the region's size (GROW); the grown part reaches the
    # other face, which is not connected to this one and stays out.
    for box in ((300, 200, 360, 250), (312, 212, 360, 260), (305, 212, 352, 250)):
        loc = locate(depth, box, (640, 480), CAM)
        assert np.linalg.norm(loc.point - truth) < 0.002, box


def test_heat_weighting_picks_the_object_when_the_background_dominates_the_region():
    obj = (300, 200, 340, 240)
    depth = _plane_scene(box=obj)
    box = (220, 120, 420, 320)  # object is 4% of it: unweighted, the plane would be 96%
    cell = 8
    heat = np.zeros((60, 80))
    heat[obj[1] // cell:obj[3] // cell, obj[0] // cell:obj[2] // cell] = 1.0
    loc = locate(depth, box, (640, 480), CAM, heat=heat, heat_cell=cell)
    assert np.linalg.norm(loc.point - face_centre(obj, 1.0, CAM)) < 0.005


def test_depth_at_a_lower_resolution_than_colour_gives_the_same_point():
    obj = (300, 200, 360, 260)
    full = _plane_scene(box=obj)
    half = full[::2, ::2]
    a = locate(full, obj, (640, 480), CAM)
    b = locate(half, obj, (640, 480), CAM)
    assert np.linalg.norm(a.point - b.point) < 0.003


def test_covariance_is_symmetric_positive_and_grows_with_depth_spread_and_distance():
    obj = (300, 200, 360, 260)
    rng = np.random.default_rng(0)
    flat = locate(_plane_scene(box=obj), obj, (640, 480), CAM)
    rough_depth = _plane_scene(box=obj)
    rough_depth[200:260, 300:360] += rng.normal(0, 0.03, (60, 60)).astype(np.float32)
    rough = locate(rough_depth, obj, (640, 480), CAM)
    far = locate(_plane_scene(z_obj=1.9, box=obj), obj, (640, 480), CAM)
    for loc in (flat, rough, far):
        c = loc.covariance
        assert c.shape == (3, 3) and np.allclose(c, c.T)
        assert np.all(np.linalg.eigvalsh(c) > 0)
    assert rough.covariance[2, 2] > 4 * flat.covariance[2, 2]
    assert far.covariance[0, 0] > flat.covariance[0, 0]
    assert far.covariance[2, 2] > flat.covariance[2, 2]


@pytest.mark.parametrize("fill,reason", [(0.0, REASON_ZERO), (np.nan, REASON_NAN),
                                         (25.0, REASON_RANGE), (0.05, REASON_RANGE)])
def test_invalid_depth_in_the_region_gives_a_reason_never_a_point(fill, reason):
    obj = (300, 200, 360, 260)
    depth = _plane_scene(box=obj)
    depth[190:270, 290:370] = fill  # the whole region, and a margin
    loc = locate(depth, obj, (640, 480), CAM, depth_range=(0.1, 10.0))
    assert isinstance(loc, DepthInvalid) and loc.reason == reason
    # A few valid pixels (under 5% of the region) are not enough for a point either.
    depth[230, 330:340] = 1.0
    assert isinstance(locate(depth, obj, (640, 480), CAM), DepthInvalid)


def test_mismatched_depth_or_camera_info_size_gives_a_reason():
    obj = (300, 200, 360, 260)
    loc = locate(np.ones((480, 600), np.float32), obj, (640, 480), CAM)
    assert isinstance(loc, DepthInvalid) and loc.reason == REASON_SIZE
    other = PinholeCamera(525.0, 525.0, 319.5, 239.5, 640, 360)
    loc = locate(_plane_scene(box=obj), obj, (640, 480), other)
    assert isinstance(loc, DepthInvalid) and loc.reason == REASON_CAMERA_INFO


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_3d_goal_on_generated_scenes_for_a_family_of_regions(encoding):
    """Regions from tight to ~3x the object's area, shifted, as different encoders give;
    random intrinsics, distances 0.4-2.0 m, noise, holes and flying pixels."""
    rng = np.random.default_rng(11)
    ok = total = 0
    for _ in range(60):
        s = make_rgbd_scene(rng, distractors=int(rng.integers(0, 4)))
        data, step = encode_depth(s.depth, encoding)
        depth = decode_depth(encoding, 480, 640, step, data)
        x0, y0, x1, y1 = s.target_box
        w, h = x1 - x0, y1 - y0
        grow = rng.uniform(0.0, 0.35)
        dx, dy = rng.uniform(-0.1, 0.1, 2)
        box = (int(max(0, x0 - grow * w + dx * w)), int(max(0, y0 - grow * h + dy * h)),
               int(min(640, x1 + grow * w + dx * w)), int(min(480, y1 + grow * h + dy * h)))
        loc = locate(depth, box, (640, 480), s.camera)
        total += 1
        ok += isinstance(loc, Position3D) and within_goal(loc.point, s.truth)
    assert ok / total >= 0.95, f"{ok}/{total}"


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_3d_goal_with_the_detector_regions(encoding):
    from clip_perception.core.detect.detector import Detector
    from clip_perception.core.model.loading import load_encoder
    from clip_perception.core.spatial.locate3d import locate_targets
    from clip_perception.testing.color_encoder import PALETTE

    det = Detector(load_encoder("clip_perception.testing.color_encoder:factory", "cpu",
                                "fp32", None))
    rng = np.random.default_rng(5 if encoding == "16UC1" else 6)
    ok = found = 0
    for _ in range(12):
        s = make_rgbd_scene(rng, target_colour=str(rng.choice(list(PALETTE))),
                            distractors=int(rng.integers(0, 4)))
        d = det.detect(s.image, targets=[s.target], with_heatmap=True)
        if not d.targets[0].present:
            continue
        found += 1
        data, step = encode_depth(s.depth, encoding)
        loc = locate_targets(d, decode_depth(encoding, 480, 640, step, data), s.camera,
                             (0.1, 10.0))[0]
        ok += isinstance(loc, Position3D) and within_goal(loc.point, s.truth)
    assert found >= 10 and ok / found >= 0.95, f"{ok}/{found}"


def test_random_cameras_are_plausible():
    rng = np.random.default_rng(3)
    for _ in range(20):
        cam = random_camera(rng)
        assert 400 < cam.fx < 650 and abs(cam.cx - 319.5) <= 8


# --- the result document ----------------------------------------------------------
def _detection(present=(True, False)):
    from clip_perception.core.detect.results import Detection, TargetResult

    targets = [TargetResult(f"t{i}", p, 0.9 if p else 0.1, float("nan"), (10, 20, 50, 60),
                            (0, 0, 64, 64), np.zeros(1)) for i, p in enumerate(present)]
    return Detection(targets, np.zeros((1, 4)), 640, 480)


def test_result_document_round_trips_with_statuses():
    from clip_perception.core.spatial.locate3d import frame_result, locate_targets

    det = _detection((True, True, False))
    depth = _plane_scene(box=(10, 20, 50, 60))
    located = locate_targets(det, depth, CAM, (0.1, 10.0))
    located[1] = DepthInvalid(REASON_ZERO, "all zero")
    text = result_json(frame_result(1_700_000_000_123_456_789, "cam_optical", det, located))
    doc = json.loads(text)
    assert doc["schema"] == SCHEMA and doc["version"] == 1
    assert doc["stamp"] == {"sec": 1_700_000_000, "nanosec": 123_456_789}
    assert [t["depth_status"] for t in doc["targets"]] == ["ok", REASON_ZERO, "not_found"]
    assert doc["targets"][2]["box"] is None and doc["targets"][1]["position"] is None
    back = parse_result(text)
    assert back.stamp_ns == 1_700_000_000_123_456_789 and back.phrases == ("t0", "t1", "t2")
    assert back.target("t0").position == pytest.approx(tuple(located[0].point), abs=1e-5)
    assert len(back.target("t0").covariance) == 9
    no_depth = parse_result(result_json(frame_result(5, "c", det)))
    assert {t.depth_status for t in no_depth.targets} == {"not_requested"}


@pytest.mark.parametrize("text", ["nope", "{}", json.dumps({"schema": SCHEMA, "version": 99}),
                                  json.dumps({"schema": SCHEMA, "version": 1})])
def test_foreign_or_future_documents_are_refused(text):
    with pytest.raises(ResultSchemaError):
        parse_result(text)
