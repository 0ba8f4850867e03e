"""The node in its own process, over real DDS on loopback.

The node runs the known-answer colour encoder, so where a block is and
whether it is present are known exactly. Each test has its own domain.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_harness import SLOW_MODEL, NodeProcess, Probe, stamp_of

from clip_perception.core.detect.windows import box_iou
from clip_perception.testing.scenes import make_scene

# Every test starts the node in a process of its own and talks to it over DDS.
pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(300)]

T0 = 1_700_000_000 * 10**9  # frame stamps: recognisably not "now"


def scene(colour="red", present=True, distractors=1, seed=3):
    return make_scene(np.random.default_rng(seed), target_colour=colour, present=present,
                      distractors=distractors)


def send_until(probe: Probe, rgb, stamp: int, topic: str, timeout=20.0, encoding="rgb8"):
    """Publish the frame (best effort) until an output on ``topic`` carries its stamp."""
    def arrived():
        return any(stamp_of(m) == stamp for _, m in probe.received[topic])
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        probe.image(rgb, stamp, encoding=encoding)
        if probe.spin_until(arrived, 1.5):
            return next(m for _, m in probe.received[topic] if stamp_of(m) == stamp)
    raise AssertionError(f"no {topic} output for frame {stamp}")


def regions(probe: Probe) -> list[tuple[int, int, int, int]]:
    return [(m.x_offset, m.y_offset, m.x_offset + m.width, m.y_offset + m.height)
            for _, m in probe.received["region"]]


def test_finds_the_commanded_object_and_stamps_outputs_with_the_frame_header(start):
    node, probe = start()
    assert probe.command("pick up the red block please", expect_targets="red block")
    s = scene("red", distractors=2)
    debug = send_until(probe, s.image, T0 + 1, "debug_image")
    heat = send_until(probe, s.image, T0 + 1, "heatmap")

    assert probe.spin_until(lambda: probe.received["detected"], 5)
    assert probe.latest("detected").data is True
    assert box_iou(regions(probe)[-1], s.target_box) >= 0.5
    assert debug.header.frame_id == "camera" and debug.encoding == "rgb8"
    assert (debug.width, debug.height) == (640, 480)
    assert heat.encoding == "32FC1" and heat.header.frame_id == "camera"
    values = np.frombuffer(bytes(heat.data), dtype=np.float32).reshape(480, 640)
    assert 0.0 <= values.min() and values.max() <= 1.0
    y, x = np.unravel_index(np.argmax(values), values.shape)
    x0, y0, x1, y1 = s.target_box
    assert x0 <= x < x1 and y0 <= y < y1, "heatmap peak is off the target"
    assert node.alive()


def test_reports_an_absent_object_as_not_detected_without_a_region(start):
    node, probe = start()
    assert probe.command("find the green block", expect_targets="green block")
    s = scene("red", distractors=0)
    send_until(probe, s.image, T0 + 2, "debug_image")
    assert probe.spin_until(lambda: probe.received["detected"], 5)
    assert [m.data for _, m in probe.received["detected"]] == [False] * len(
        probe.received["detected"])
    assert probe.received["region"] == []


def test_several_objects_in_one_command(start):
    node, probe = start()
    assert probe.command("pick up the red block and the blue block",
                         expect_targets="red block, blue block")
    rng = np.random.default_rng(7)
    both = make_scene(rng, target_colour="red", distractors=0)
    # Paint a blue block far from the red one.
    from clip_perception.testing.scenes import paint
    x0, y0, x1, y1 = both.target_box
    bx = 40 if x0 > 320 else 500
    paint(both.image, (bx, 180, bx + 100, 280), "blue", rng)
    send_until(probe, both.image, T0 + 3, "debug_image")
    assert probe.spin_until(lambda: probe.received["detected"], 5)
    assert probe.latest("detected").data is True
    assert box_iou(regions(probe)[-1], both.target_box) >= 0.5, "region is the first target's"

    only_red = make_scene(np.random.default_rng(8), target_colour="red", distractors=0)
    send_until(probe, only_red.image, T0 + 4, "debug_image")
    probe.spin(0.3)
    assert probe.latest("detected").data is False, "detected needs every named object"


def test_bad_images_and_commands_are_logged_counted_and_survived(start):
    node, probe = start()
    assert probe.command("find the red block", expect_targets="red block")
    Image = probe._Image
    small = np.zeros((4, 6, 3), dtype=np.uint8)
    bad = []
    bad.append(probe.make_image(small, T0, encoding="yuv422"))           # unknown encoding
    short_step = probe.make_image(small, T0)
    short_step.step = 10                                                  # < 6 px x 3 bytes
    bad.append(short_step)
    truncated = probe.make_image(small, T0)
    truncated.data = bytes(30)                                            # needs 72
    bad.append(truncated)
    bad.append(Image(height=0, width=0, encoding="rgb8", step=0))         # empty
    for msg in bad:
        probe.image_pub.publish(msg)
        probe.spin(0.05)
    bad_commands = ["", "pick up", "x" * 10_000, "\x00\x01\x02", "pick it up"]
    for text in bad_commands:
        probe.command(text)
        probe.spin(0.05)

    def counted():
        c = probe.counters()
        return (c.get("images_rejected") == str(len(bad))
                and c.get("commands_rejected") == str(len(bad_commands)))
    assert probe.spin_until(counted, 10), probe.counters()
    assert node.alive()
    assert probe.targets() == "red block", "a bad command must not change the target"
    log = node.log()
    for expected in ("unsupported encoding 'yuv422'", "step 10 is shorter", "data holds 30 bytes",
                     "image is empty", "has a verb but names no object", "characters long",
                     "'it' does not name an object"):
        assert expected in log, f"missing log line with {expected!r}:\n{log}"

    s = scene("red")
    send_until(probe, s.image, T0 + 5, "debug_image")
    probe.spin(0.2)
    assert probe.latest("detected").data is True, "the node keeps working after bad input"


def test_only_the_newest_frame_is_processed_under_a_fast_publisher(start):
    node, probe = start(params={"model": SLOW_MODEL, "refine": False},
                        env={"SLOW_ENCODER_DELAY": "0.3"})
    assert probe.command("find the red block", expect_targets="red block")
    s = scene("red")
    stamps = [T0 + 100 + i for i in range(60)]
    for stamp in stamps:  # ~60 frames in ~1.2 s; each takes the node >= 0.3 s
        probe.image(s.image, stamp)
        probe.spin(0.02)
    last = stamps[-1]
    assert probe.spin_until(
        lambda: any(stamp_of(m) == last for _, m in probe.received["debug_image"]), 10), \
        "the newest frame was not processed"
    probe.spin(1.5)  # let diagnostics catch up
    c = {k: int(v) for k, v in probe.counters().items() if v.isdigit()}
    processed, dropped, received = c["frames_processed"], c["frames_dropped"], c["frames_received"]
    assert received >= 30, c
    assert processed <= received // 3, f"a backlog was processed: {c}"
    assert processed + dropped == received, f"every frame is processed or counted: {c}"
    out = [stamp_of(m) for _, m in probe.received["debug_image"]]
    assert out == sorted(out) and out[-1] == last


def test_commands_are_handled_while_a_frame_is_being_processed(start):
    node, probe = start(params={"model": SLOW_MODEL, "refine": False},
                        env={"SLOW_ENCODER_DELAY": "3.0"})
    assert probe.command("find the red block", expect_targets="red block")
    probe.image(scene("red").image, T0 + 7)
    probe.spin(0.5)  # the worker is now inside a 3 s inference
    sent = time.monotonic()
    assert probe.command("find the blue block", expect_targets="blue block", timeout=2.0)
    assert time.monotonic() - sent < 2.0
    assert probe.spin_until(lambda: probe.counters().get("results_superseded") == "1", 15), \
        (probe.counters(), node.log())
    assert probe.received["detected"] == [], "a result for the old target must not be published"


def test_parameters_are_validated_and_applied_at_run_time(start):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    node, probe = start()
    client = probe.node.create_client(SetParameters, "/clip_perception/set_parameters")
    assert client.wait_for_service(timeout_sec=10)

    def set_param(name, kind, **value):
        request = SetParameters.Request(parameters=[Parameter(
            name=name, value=ParameterValue(type=kind, **value))])
        future = client.call_async(request)
        assert probe.spin_until(future.done, 10)
        return future.result().results[0]

    out_of_range = set_param("presence_threshold", ParameterType.PARAMETER_DOUBLE,
                             double_value=1.5)
    assert not out_of_range.successful
    no_backgrounds = set_param("background_prompts", ParameterType.PARAMETER_STRING_ARRAY,
                               string_array_value=[])
    assert not no_backgrounds.successful and "background_prompts" in no_backgrounds.reason
    read_only = set_param("model", ParameterType.PARAMETER_STRING, string_value="RN50")
    assert not read_only.successful
    bad_target = set_param("target", ParameterType.PARAMETER_STRING, string_value="pick up")
    assert not bad_target.successful and "names no object" in bad_target.reason

    good = set_param("target", ParameterType.PARAMETER_STRING, string_value="grab the blue block")
    assert good.successful
    assert probe.spin_until(lambda: probe.targets() == "blue block", 5)
    stride = set_param("window_stride", ParameterType.PARAMETER_DOUBLE, double_value=0.75)
    assert stride.successful
    s = scene("blue")
    send_until(probe, s.image, T0 + 8, "debug_image")
    probe.spin(0.2)
    assert probe.latest("detected").data is True
    assert node.alive()


def test_target_parameter_at_start_and_topics_follow_namespace_and_remaps(start):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    node, probe = start(params={"target": "find the red block"}, wait=False,
                        remaps={"__ns": "/robot", "image": "/camera/image_raw"},
                        namespace="/robot")
    probe.image_pub = probe.node.create_publisher(
        Image, "/camera/image_raw", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    assert probe.wait_for_node(40), node.log()
    assert probe.spin_until(lambda: probe.targets() == "red block", 10)
    send_until(probe, scene("red").image, T0 + 9, "debug_image")
    assert probe.spin_until(lambda: probe.received["detected"], 5)
    assert probe.latest("detected").data is True


def test_a_model_that_cannot_be_loaded_exits_nonzero_saying_how_to_fix_it(ros_domain, tmp_path):
    # Three processes that each exit at configure, started together (they share
    # nothing: each fails before it joins the domain's graph).
    missing = NodeProcess(ros_domain, tmp_path / "missing.log",
                          {"model": "/nonexistent/ViT-B-32.pt"})
    bad_qos = NodeProcess(ros_domain, tmp_path / "qos.log", {"image_reliability": "fast"})
    # A named model that is not cached, with no network: the download fails fast
    # (a proxy on a closed loopback port keeps any attempt on this machine).
    offline = NodeProcess(ros_domain, tmp_path / "offline.log",
                          {"model": "ViT-B/32", "model_download_root": str(tmp_path / "cache")},
                          env={"https_proxy": "http://127.0.0.1:9", "http_proxy":
                               "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"})
    try:
        assert missing.wait(60) == 1
        log = missing.log()
        assert "does not exist" in log and "give the path of a CLIP checkpoint" in log

        assert bad_qos.wait(60) == 1
        assert "image_reliability 'fast' must be best_effort or reliable" in bad_qos.log()

        assert offline.wait(120) == 1
        log = offline.log()
        assert "could not load CLIP model 'ViT-B/32'" in log
        assert "ViT-B-32.pt" in log and str(tmp_path / "cache") in log
    finally:
        for process in (missing, bad_qos, offline):
            process.stop()


def test_lifecycle_without_autostart_waits_for_configure_and_activate(start):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    node, probe = start(params={"autostart": False}, wait=False)
    get_state = probe.node.create_client(GetState, "/clip_perception/get_state")
    change = probe.node.create_client(ChangeState, "/clip_perception/change_state")
    assert get_state.wait_for_service(timeout_sec=30), node.log()

    def call(client, request):
        future = client.call_async(request)
        assert probe.spin_until(future.done, 30)
        return future.result()

    assert call(get_state, GetState.Request()).current_state.label == "unconfigured"
    assert probe.command_pub.get_subscription_count() == 0
    for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        assert call(change, ChangeState.Request(transition=Transition(id=transition))).success
    assert call(get_state, GetState.Request()).current_state.label == "active"
    assert probe.wait_for_node(10)
    assert probe.command("find the red block", expect_targets="red block")
    assert call(change, ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_DEACTIVATE))).success
    assert probe.spin_until(lambda: probe.command_pub.get_subscription_count() == 0, 10)

    # cleanup releases the model; configure and activate again keep the target
    for transition in (Transition.TRANSITION_CLEANUP, Transition.TRANSITION_CONFIGURE,
                       Transition.TRANSITION_ACTIVATE):
        assert call(change, ChangeState.Request(transition=Transition(id=transition))).success
    assert probe.wait_for_node(10)
    send_until(probe, scene("red").image, T0 + 10, "debug_image")
    assert probe.spin_until(lambda: probe.received["detected"], 5)
    assert probe.latest("detected").data is True


@pytest.mark.ros
def test_mode_switches_at_run_time_and_both_modes_answer(start):
    """crops -> hybrid -> crops with set_parameters; in each mode the published heatmap is
    the one that mode computes in-process (the dense map in hybrid), and the region fits."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from std_msgs.msg import Header

    from clip_perception.core.detect.config import DetectorConfig
    from clip_perception.core.detect.detector import Detector
    from clip_perception.ros.messages import heatmap_image
    from clip_perception.testing.color_encoder import ColorEncoder

    node, probe = start()
    client = probe.node.create_client(SetParameters, "/clip_perception/set_parameters")
    assert client.wait_for_service(timeout_sec=10)

    def set_mode(mode: str) -> None:
        request = SetParameters.Request(parameters=[Parameter(
            name="mode", value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                              string_value=mode))])
        future = client.call_async(request)
        assert probe.spin_until(future.done, 10)
        assert future.result().results[0].successful, future.result().results[0].reason

    assert probe.command("find the red block", expect_targets="red block")
    s = scene("red", distractors=2)
    expected = {}
    for mode in ("crops", "hybrid"):
        local = Detector(ColorEncoder(), DetectorConfig(mode=mode))
        detection = local.detect(s.image, ["red block"], with_heatmap=True)
        expected[mode] = np.frombuffer(bytes(heatmap_image(detection, Header()).data),
                                       dtype=np.float32)
    assert not np.allclose(expected["crops"], expected["hybrid"])

    for k, mode in enumerate(("hybrid", "crops", "hybrid")):
        set_mode(mode)
        stamp = T0 + 100 + k
        heat = send_until(probe, s.image, stamp, "heatmap")
        values = np.frombuffer(bytes(heat.data), dtype=np.float32)
        np.testing.assert_allclose(values, expected[mode], atol=1e-5, err_msg=mode)
        assert probe.spin_until(lambda: probe.received["region"], 5)
        assert probe.latest("detected").data is True
        assert box_iou(regions(probe)[-1], s.target_box) >= 0.5, mode
    bad = SetParameters.Request(parameters=[Parameter(
        name="mode", value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                          string_value="dense"))])
    future = client.call_async(bad)
    assert probe.spin_until(future.done, 10)
    assert not future.result().results[0].successful
    assert node.alive()
