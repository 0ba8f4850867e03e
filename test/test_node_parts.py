"""The node's building blocks, without DDS: slot, throttled log, timings,
parameter table, message conversions and drawing."""

from __future__ import annotations

import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from clip_perception.core.detect.config import DetectorConfig
from clip_perception.core.detect.results import Detection, TargetResult
from clip_perception.core.runtime.camera_slots import CameraSlots
from clip_perception.core.runtime.log_throttle import OVERFLOW_KIND, ProblemLog
from clip_perception.core.runtime.timings import Timings
from clip_perception.ros.drawing import annotate

REPO = Path(__file__).resolve().parents[1]


# --- CameraSlots, one camera (the default node) ---------------------------------------
def test_slot_keeps_only_the_newest_item_and_counts_the_rest():
    slot = CameraSlots(("",))
    assert slot.put("", 1) is False
    assert slot.put("", 2) is True and slot.put("", 3) is True
    assert slot.take(1, 0) == [("", 3)] and slot.dropped == {"": 2}
    assert slot.take(1, 0.01) == []


def test_slot_clear_discards_the_waiting_item_and_counts_it():
    slot = CameraSlots(("",))
    assert not slot.clear() and slot.dropped == {"": 0}
    slot.put("", 1)
    assert slot.clear() and slot.dropped == {"": 1}
    assert slot.take(1, timeout=0.01) == []


def test_slot_wakes_a_waiting_consumer_and_close_releases_it():
    slot = CameraSlots(("",))
    got = []
    consumer = threading.Thread(target=lambda: got.append(slot.take(1, 5)))
    consumer.start()
    time.sleep(0.05)
    slot.put("", "frame")
    consumer.join(2)
    assert got == [[("", "frame")]]
    waiting = threading.Thread(target=lambda: got.append(slot.take(1, 30)))
    started = time.monotonic()
    waiting.start()
    slot.close()
    waiting.join(2)
    assert got[-1] == [] and time.monotonic() - started < 2


# --- ProblemLog -------------------------------------------------------------------
def test_problem_log_throttles_per_kind_and_counts_everything():
    lines, now = [], [0.0]
    log = ProblemLog(lines.append, period=5.0, clock=lambda: now[0])
    assert log.report("a", "first a")
    assert not log.report("a", "second a")
    assert log.report("b", "first b"), "another kind of problem is logged at once"
    now[0] = 6.0
    assert log.report("a", "third a")
    assert lines == ["first a", "first b", "third a (1 more like this in the last 6 s)"]
    assert log.counts == {"a": 3, "b": 1}


def test_problem_log_stays_bounded_under_ever_different_kinds():
    lines, now = [], [0.0]
    log = ProblemLog(lines.append, period=5.0, clock=lambda: now[0], max_kinds=8)
    for i in range(5000):  # e.g. malformed images of 5000 different sizes
        log.report(f"image/rgb8/{i}x1", f"bad image {i}")
    assert len(log.counts) == 9 and len(log._last) <= 9 and len(log._suppressed) <= 9
    assert sum(log.counts.values()) == 5000, "every occurrence is still counted"
    assert log.counts[OVERFLOW_KIND] == 5000 - 8
    assert len(lines) == 9, "the overflow is throttled like one kind"
    assert log.report("image/rgb8/0x1", "a known kind again") is False  # throttled as before
    assert log.counts["image/rgb8/0x1"] == 2


def test_timings_report_percentiles_per_stage():
    timings = Timings(window=100)
    for ms in range(1, 101):
        timings.add("processing", ms / 1000)
    p50, p95 = timings.percentiles("processing")
    assert p50 == pytest.approx(0.0505) and p95 == pytest.approx(0.09505)
    assert timings.percentiles("never") is None
    assert timings.summary()["processing_ms_p95"] == "95.0"


# --- parameters ---------------------------------------------------------------------
def test_parameter_table_matches_the_shipped_config_and_the_detector_defaults():
    from clip_perception.ros.parameters import PARAMS, descriptor, detector_config

    shipped = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())
    values = shipped["/**/clip_perception"]["ros__parameters"]  # any namespace
    assert set(values) == {p.name for p in PARAMS}
    for p in PARAMS:
        assert values[p.name] == p.default, f"{p.name}: yaml and node defaults differ"
        d = descriptor(p)
        assert d.description and d.read_only == p.read_only
    assert detector_config(values) == DetectorConfig()


def test_parameter_descriptors_carry_ranges():
    from clip_perception.ros.parameters import PARAMS, descriptor

    by_name = {p.name: p for p in PARAMS}
    threshold = descriptor(by_name["presence_threshold"]).floating_point_range[0]
    assert (threshold.from_value, threshold.to_value) == (0.01, 0.99)
    budget = descriptor(by_name["crop_budget"]).integer_range[0]
    assert (budget.from_value, budget.to_value) == (1, 4096)
    assert descriptor(by_name["model"]).read_only


def test_parameter_ranges_are_the_detector_configs():
    """One definition: each detector parameter's descriptor range is core.config.RANGES."""
    from clip_perception.core.detect.config import RANGES
    from clip_perception.ros.parameters import PARAMS, descriptor

    by_name = {p.name: p for p in PARAMS}
    for name, (low, high) in RANGES.items():
        d = descriptor(by_name[name])
        (r,) = d.integer_range or d.floating_point_range
        assert (r.from_value, r.to_value) == (low, high), name


# --- message conversions ------------------------------------------------------------
def _detection(present=(True, False)) -> Detection:
    boxes = [(10, 8, 30, 40), (36, 8, 60, 40)]
    targets = [TargetResult(f"t{i}", p, 0.9 if p else 0.1, 0.2, boxes[i], (0, 0, 32, 32),
                            np.zeros(3)) for i, p in enumerate(present)]
    heat = np.zeros((6, 8))
    heat[2, 3] = 0.75
    return Detection(targets, np.zeros((3, 4), int), 64, 48, 3, [heat, heat * 0], 8)


def test_image_message_with_padded_bgr_rows_becomes_a_frame_view():
    from sensor_msgs.msg import Image

    from clip_perception.ros.messages import frame_from_image

    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.zeros((2, 12), np.uint8)
    padded[:, :9] = pixels.reshape(2, 9)
    msg = Image(height=2, width=3, encoding="bgr8", step=12, data=padded.tobytes())
    frame = frame_from_image(msg)
    assert frame.order == "bgr"
    assert np.array_equal(frame.to_rgb(), pixels[:, :, ::-1])


def test_region_heatmap_and_debug_messages():
    from std_msgs.msg import Header

    from clip_perception.ros.messages import heatmap_image, region, rgb_image

    det = _detection()
    roi = region(det.targets[0])
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (10, 8, 20, 32)
    header = Header(frame_id="cam")
    header.stamp.sec = 7
    heat = heatmap_image(det, header)
    assert (heat.encoding, heat.width, heat.height, heat.step) == ("32FC1", 64, 48, 256)
    values = np.frombuffer(bytes(heat.data), np.float32).reshape(48, 64)
    assert values.max() == pytest.approx(0.75, abs=1e-6)
    y, x = np.unravel_index(values.argmax(), values.shape)
    assert 16 <= y < 24 and 24 <= x < 32, "the hot cell lands at its pixels"
    image = rgb_image(np.zeros((4, 5, 3), np.uint8), header)
    assert (image.encoding, image.step, image.header.stamp.sec) == ("rgb8", 15, 7)


def _fake_vision_msgs():
    """Classes with vision_msgs' (Humble and later) field layout."""
    ns = types.SimpleNamespace

    class Detection2DArray:
        def __init__(self, header=None):
            self.header, self.detections = header, []

    class Detection2D:
        def __init__(self, header=None):
            self.header, self.id, self.results = header, "", []
            self.bbox = ns(center=ns(position=ns(x=0.0, y=0.0), theta=0.0), size_x=0.0, size_y=0.0)

    class ObjectHypothesisWithPose:
        def __init__(self):
            self.hypothesis = ns(class_id="", score=0.0)

    return ns(Detection2DArray=Detection2DArray, Detection2D=Detection2D,
              ObjectHypothesisWithPose=ObjectHypothesisWithPose)


def test_detection_array_has_one_detection_per_found_target():
    from std_msgs.msg import Header

    from clip_perception.ros.messages import detection_array

    header = Header(frame_id="cam")
    array = detection_array(_detection((True, True)), header, msgs=_fake_vision_msgs())
    assert array.header is header and len(array.detections) == 2
    first = array.detections[0]
    assert first.header is header and first.id == "t0"
    assert first.results[0].hypothesis.class_id == "t0"
    assert first.results[0].hypothesis.score == pytest.approx(0.9)
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (20.0, 24.0)
    assert (first.bbox.size_x, first.bbox.size_y) == (20.0, 32.0)
    only_found = detection_array(_detection((True, False)), header, msgs=_fake_vision_msgs())
    assert [d.id for d in only_found.detections] == ["t0"]


def test_detection_array_uses_real_vision_msgs_where_installed():
    vision_msgs = pytest.importorskip(
        "vision_msgs.msg", reason="vision_msgs is not installable from PyPI; runs on ROS installs")
    from std_msgs.msg import Header

    from clip_perception.ros.messages import detection_array

    array = detection_array(_detection((True, True)), Header(frame_id="cam"))
    assert isinstance(array, vision_msgs.Detection2DArray) and len(array.detections) == 2
    assert array.detections[1].bbox.center.position.x == 48.0


def test_annotate_draws_found_and_missing_targets_on_a_copy():
    from clip_perception.ros.drawing import FOUND, MISSING

    rgb = np.full((48, 64, 3), 128, np.uint8)
    out = annotate(rgb, _detection((True, False)))
    assert out.shape == rgb.shape and (rgb == 128).all(), "the frame itself is not drawn on"
    assert tuple(out[30, 10]) == FOUND, "left edge of the found target's box"
    assert tuple(out[30, 36]) == MISSING, "left edge of the missing target's box"
    assert tuple(out[30, 20]) == (128, 128, 128), "inside the box is untouched"


# --- the node's counters, read by /diagnostics while the publisher thread counts ---------
@pytest.mark.slow
def test_node_counters_survive_new_reasons_counted_on_the_publisher_thread():
    """The publisher thread adds ``no_3d_<reason>`` keys while the diagnostics timer
    reads the counters: the read must never raise (it would end rclpy.spin)."""
    import sys
    from collections import Counter

    from clip_perception.ros.node import PerceptionNode

    def camera():
        return types.SimpleNamespace(
            input=types.SimpleNamespace(counts=Counter(frames_received=1)),
            spatial=types.SimpleNamespace(counts=Counter(poses_published=0)))

    cameras = {"a": camera(), "b": camera()}  # two: the second camera's counts are merged
    spatial = cameras["b"].spatial
    loop = types.SimpleNamespace(counters=dict, camera_figures=lambda: {
        name: {"frames_processed": 1} for name in cameras})
    node = types.SimpleNamespace(cameras=cameras, loop=loop, command_counts=Counter())
    stop = threading.Event()

    def publisher_thread():
        i = 0
        while not stop.is_set():
            spatial.counts[f"no_3d_reason{i}"] += 1
            i += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    writer = threading.Thread(target=publisher_thread, daemon=True)
    writer.start()
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            assert PerceptionNode.counters(node)["frames_received"] == 2
            assert "a/frames_processed" in PerceptionNode.camera_figures(node)
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(interval)
