"""The RGB-D input class without DDS: a fake node records subscriptions; messages are real."""

from __future__ import annotations

import numpy as np
import pytest
from optional import has_module
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from clip_perception.core.io.compressed import encode_compressed
from clip_perception.core.runtime.inference_loop import PendingFrame, resolve
from clip_perception.core.runtime.log_throttle import ProblemLog
from clip_perception.core.spatial.depth import encode_depth
from clip_perception.core.spatial.locate3d import RgbdFrame
from clip_perception.ros.rgbd_inputs import RgbdCameraInput, colour_topic


class FakeNode:
    def __init__(self):
        self.subs, self.timers = {}, []

    def create_subscription(self, cls, topic, callback, qos):
        self.subs[topic] = (cls, callback)
        return topic

    def destroy_subscription(self, sub):
        self.subs.pop(sub)

    def create_timer(self, period, callback):
        self.timers.append(callback)
        return callback

    def destroy_timer(self, timer):
        self.timers.remove(timer)

    def resolve_topic_name(self, name):
        return "/" + name


def stamped(msg, ns):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 10**9)
    msg.header.frame_id = "cam"
    return msg


def rig(transport="compressed", use_depth=True, pairer_factory=None, pending=None):
    """A camera input whose sink decodes each frame at once, as the worker does when it
    takes it (``pending`` collects the frames as handed over, undecoded)."""
    node, got, logged = FakeNode(), [], []
    problems = ProblemLog(logged.append)
    extra = {"pairer_factory": pairer_factory} if pairer_factory else {}

    def sink(header, frame, received):
        if pending is not None:
            pending.append(frame)
        frame = resolve(frame)
        if frame is not None:
            got.append((header, frame))

    cam = RgbdCameraInput(node, sink, problems,
                          transport=transport, use_depth=use_depth, tolerance=0.05, **extra)
    cam.subscribe(None)
    return node, cam, got, logged


RGB = np.zeros((48, 64, 3), np.uint8)
RGB[10:30, 10:30] = (220, 40, 40)


def jpeg(ns, data=None):
    return stamped(CompressedImage(format="jpeg", data=data or encode_compressed(RGB)), ns)


def depth(ns, encoding="16UC1", metres=1.0):
    data, step = encode_depth(np.full((48, 64), metres), encoding)
    return stamped(Image(height=48, width=64, encoding=encoding, step=step, data=data), ns)


def test_topics_follow_image_transport():
    assert colour_topic("raw") == "image" and colour_topic("compressed") == "image/compressed"
    with pytest.raises(ValueError):
        colour_topic("theora")
    node, *_ = rig("raw", use_depth=False)
    assert set(node.subs) == {"image"} and node.subs["image"][0] is Image
    node, *_ = rig("compressed", use_depth=True)
    assert set(node.subs) == {"image/compressed", "depth", "camera_info"}
    assert node.subs["camera_info"][0] is CameraInfo and node.timers


def _message_filters_pairer(on_pair, tolerance_ns):
    from test_stamp_pairing import fake_message_filters

    from clip_perception.ros.depth_pairing import MessageFiltersPairer

    return MessageFiltersPairer(on_pair, tolerance_ns, message_filters=fake_message_filters())


def _real_message_filters_pairer(on_pair, tolerance_ns):
    from clip_perception.ros.depth_pairing import MessageFiltersPairer

    return MessageFiltersPairer(on_pair, tolerance_ns)


@pytest.mark.parametrize("factory", [
    pytest.param(None, id="core"),
    pytest.param(_message_filters_pairer, id="message_filters"),
    pytest.param(_real_message_filters_pairer, id="real_message_filters", marks=pytest.mark.skipif(
        not has_module("message_filters"),
        reason="message_filters is not installed (it comes with a ROS install, not from PyPI)")),
])
def test_paired_unpaired_and_bad_depth_frames_reach_the_sink_with_reasons(factory):
    """Both pairers; message_filters reads ``header`` off what the input hands it."""
    node, cam, got, logged = rig(pairer_factory=factory)
    cam.on_colour(jpeg(1_000_000_000))
    cam.on_depth(depth(1_010_000_000))                    # 10 ms: paired
    cam.on_colour(jpeg(2_000_000_000))
    cam.on_depth(depth(2_200_000_000))                    # 200 ms later: c2 unpaired
    cam.on_colour(jpeg(3_000_000_000))
    cam.on_depth(stamped(Image(height=48, width=64, encoding="8UC3", step=192,
                               data=bytes(48 * 192)), 3_000_000_000))
    assert len(got) == 3 and all(isinstance(f, RgbdFrame) for _, f in got)
    first, second, third = (f for _, f in got)
    assert first.depth is not None and float(first.depth[0, 0]) == pytest.approx(1.0)
    assert first.missing is None
    assert np.abs(first.to_rgb()[20, 20].astype(int) - (220, 40, 40)).max() <= 10, "jpeg, RGB"
    assert second.depth is None and second.missing.reason == "depth_missing"
    assert third.depth is None and third.missing.reason == "depth_format"
    assert cam.counts["frames_paired"] == 2 and cam.counts["frames_unpaired"] == 1


def test_corrupt_jpeg_is_counted_and_reported_not_delivered():
    node, cam, got, logged = rig(use_depth=False)
    good = encode_compressed(RGB)
    cam.on_colour(jpeg(1, good[: len(good) // 2]))
    cam.on_colour(jpeg(2, b"garbage"))
    assert got == [] and cam.counts["images_rejected"] == 2
    assert any("truncated JPEG" in line for line in logged)
    cam.on_colour(jpeg(3, good))
    assert len(got) == 1


def test_compressed_frames_are_handed_over_undecoded_and_decoded_by_whoever_takes_them():
    """The executor does no jpeg work: a corrupt frame is neither counted nor logged
    until it is decoded (by the worker, for the frames it takes)."""
    node = FakeNode()
    logged, handed = [], []
    cam = RgbdCameraInput(node, lambda h, f, r: handed.append(f), ProblemLog(logged.append),
                          transport="compressed", use_depth=False)
    cam.subscribe(None)
    cam.on_colour(jpeg(1, b"garbage"))
    cam.on_colour(jpeg(2))
    assert all(isinstance(f, PendingFrame) for f in handed)
    assert cam.counts["images_rejected"] == 0 and logged == []
    assert handed[0].resolve() is None and cam.counts["images_rejected"] == 1
    assert logged and "image/compressed" in logged[0]
    frame = handed[1].resolve()
    assert isinstance(frame, RgbdFrame) and frame.to_rgb().shape == (48, 64, 3)


def test_camera_info_state_and_zero_focal_length():
    node, cam, got, logged = rig()
    assert cam.camera_state() == (None, None)
    info = CameraInfo(width=64, height=48)
    cam.on_camera_info(info)                               # k all zero
    camera, problem = cam.camera_state()
    assert camera is None and problem.reason == "camera_info_invalid"
    assert cam.counts["camera_info_rejected"] == 1 and "focal length" in logged[-1]
    info.k = [60.0, 0, 32, 0, 60.0, 24, 0, 0, 1]
    cam.on_camera_info(info)
    camera, problem = cam.camera_state()
    assert problem is None and camera.fx == 60.0
    cam.unsubscribe()
    assert node.subs == {} and node.timers == []
