"""One request per frame: :class:`TritonDetector` against the served detect model
(``NAME_detect``, :mod:`clip_perception.serving.detect_model`) in this process, through
the stand-in for ``tritonclient.grpc`` of ``test_triton_frames.py``. The real server is
served in ``test_triton_server.py``."""

from __future__ import annotations

import numpy as np
import pytest
from test_triton_frames import ENCODERS, LocalServer, ServerError, remote

from clip_perception.core.detect.box_embeddings import box_embeddings, tracked_boxes
from clip_perception.core.detect.config import DetectorConfig
from clip_perception.core.detect.detector import Detector
from clip_perception.core.encoder import EncoderRequestError, EncoderUnavailableError
from clip_perception.core.io.image_formats import Frame, ImageFormatError
from clip_perception.core.remote import detection_wire as wire
from clip_perception.core.remote import triton_protocol as protocol
from clip_perception.core.remote.triton_detector import TritonDetector, make_detector
from clip_perception.core.remote.triton_encoder import TritonEncoder, parse_triton_url
from clip_perception.testing import color_encoder
from clip_perception.testing.scenes import scene_set


def assert_same_detection(got, want, embeddings=True):
    """Every field of ``got`` equals ``want``'s."""
    assert (got.width, got.height, got.crops, got.refined, got.dense_passes,
            got.heatmap_cell) == (want.width, want.height, want.crops, want.refined,
                                  want.dense_passes, want.heatmap_cell)
    np.testing.assert_array_equal(got.windows, want.windows)
    assert len(got.targets) == len(want.targets)
    for g, w in zip(got.targets, want.targets):
        assert (g.phrase, g.present, g.box, g.best_window, g.second_box) == (
            w.phrase, w.present, w.box, w.best_window, w.second_box)
        assert g.score == w.score and g.second_score == w.second_score
        np.testing.assert_array_equal(g.window_scores, w.window_scores)
        assert g.frame_score == w.frame_score or (np.isnan(g.frame_score)
                                                  and np.isnan(w.frame_score))
    assert len(got.heatmaps) == len(want.heatmaps)
    for g, w in zip(got.heatmaps, want.heatmaps):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("kind", ["color", "clip_like"])
def test_one_request_per_frame_gives_the_in_process_detection(kind):
    server = LocalServer(ENCODERS[kind]())
    there, local = TritonDetector(remote(server)), Detector(ENCODERS[kind]())
    scenes = scene_set(3, seed=11)
    for scene in scenes:
        targets = [scene.target, "cyan block"]
        assert_same_detection(there.detect(scene.image, targets, with_heatmap=True),
                              local.detect(scene.image, targets, with_heatmap=True))
    assert server.detect_requests == len(scenes) and not server.requests  # no image requests


def test_the_found_regions_embeddings_come_with_the_detection():
    """Tracking's box embeddings are computed on the server, in tracking's order."""
    server = LocalServer(color_encoder.factory("cpu"))
    there, local = TritonDetector(remote(server)), Detector(color_encoder.factory("cpu"))
    scene = scene_set(1, seed=3)[0]
    got = there.detect(scene.image, [scene.target])
    boxes = tracked_boxes(got)
    assert got.targets[0].present and boxes[-1] == (0, 0, got.width, got.height)
    want = box_embeddings(local.encoder, Frame.from_rgb(scene.image), boxes)
    np.testing.assert_allclose(got.box_embeddings, want, atol=1e-6)
    there.embed_boxes = False
    assert there.detect(scene.image, [scene.target]).box_embeddings is None
    absent = TritonDetector(remote(server)).detect(scene.image, ["cyan block"])
    assert not tracked_boxes(absent) and len(absent.box_embeddings) == 0


def test_settings_and_pixel_order_travel_with_each_frame():
    server = LocalServer(color_encoder.factory("cpu"))
    there, local = TritonDetector(remote(server)), Detector(color_encoder.factory("cpu"))
    scene = scene_set(1, seed=7)[0]
    for config in (DetectorConfig(crop_budget=40, presence_threshold=0.3),
                   DetectorConfig(refine=False, window_stride=0.5),
                   DetectorConfig(box_method="heatmap", background_prompts=("wall",))):
        there.configure(config)
        local.configure(config)
        bgr = Frame(np.ascontiguousarray(scene.image[:, :, ::-1]), "bgr")
        assert_same_detection(there.detect(bgr, [scene.target]),
                              local.detect(scene.image, [scene.target]))
        assert server.detect.detector.config == config
        np.testing.assert_array_equal(there.windows_for(640, 480), local.windows_for(640, 480))
    sent = []
    server.before_detect_request = sent.append
    there.detect(Frame(np.ascontiguousarray(scene.image[:, :, ::-1]), "bgr"), [scene.target])
    assert wire.parse_request(sent[-1][protocol.REQUEST].reshape(-1)[0])["order"] == "bgr"
    np.testing.assert_array_equal(sent[-1][protocol.FRAMES][0], scene.image[:, :, ::-1])


def test_targets_are_embedded_on_the_server_before_they_go_live():
    server = LocalServer(color_encoder.factory("cpu"))
    there = TritonDetector(remote(server))
    there.set_targets(["red block"])
    assert there.targets == ("red block",) and server.detect_requests == 1
    assert "red block" in server.detect.detector.text._cache
    scene = scene_set(1, seed=2)[0]
    assert [t.phrase for t in there.detect(scene.image).targets] == ["red block"]
    there.set_targets([])
    assert not there.detect(scene.image).targets and server.detect_requests == 2


def test_a_model_error_is_a_request_error_and_an_outage_is_unavailable():
    server = LocalServer(color_encoder.factory("cpu"))
    there = TritonDetector(remote(server))
    scene = scene_set(1, seed=4)[0]
    with pytest.raises(ImageFormatError):  # refused here, as the local detector does
        there.detect(np.zeros((4, 4, 4), np.uint8), ["red block"])

    def bad_request(arrays):  # a frame the server's model refuses
        arrays[protocol.FRAMES] = arrays[protocol.FRAMES][..., :2]

    server.before_detect_request = bad_request
    with pytest.raises(EncoderRequestError, match="a detect request carries one uint8"):
        there.detect(scene.image, ["red block"])
    assert there.encoder.request_errors == 1 and there.encoder.failures == 0

    def down(arrays):
        raise ServerError("failed to connect to all addresses", "StatusCode.UNAVAILABLE")

    server.before_detect_request = down
    with pytest.raises(EncoderUnavailableError, match="failed to connect"):
        there.detect(scene.image, ["red block"])
    with pytest.raises(EncoderUnavailableError):
        there.set_targets(["blue block"])
    assert there.targets == ()
    server.before_detect_request = None
    assert there.detect(scene.image, [scene.target]).targets[0].present


def test_one_bad_request_in_a_detect_batch_fails_alone():
    from clip_perception.serving.detect_model import DetectModel, detect_responses
    from clip_perception.serving.window_model import each_request

    model = DetectModel(color_encoder.factory("cpu"))
    scenes = scene_set(2, seed=6)

    def request(image, targets, order="rgb"):
        return {protocol.FRAMES: image[None], protocol.REQUEST: np.array(
            [[wire.request_json(order, targets, DetectorConfig())]], dtype=object)}

    batch = [request(scenes[0].image, [scenes[0].target]),
             request(scenes[1].image, [scenes[1].target], order="rgba"),
             request(scenes[1].image, [scenes[1].target])]
    out = each_request(detect_responses, model, batch)
    assert isinstance(out[1], str) and "rgba" in out[1]
    local = Detector(color_encoder.factory("cpu"))
    for i in (0, 2):
        assert_same_detection(wire.decode_detection(out[i]),
                              local.detect(scenes[i // 2].image, [scenes[i // 2].target]))


def test_make_detector_picks_the_server_side_detector_for_triton():
    server = LocalServer(color_encoder.factory("cpu"))
    assert isinstance(make_detector(remote(server)), TritonDetector)
    local = TritonEncoder(parse_triton_url("triton://127.0.0.1:1/enc?detect=local"),
                          server.grpc_module())
    assert type(make_detector(local)) is Detector
    assert type(make_detector(color_encoder.factory("cpu"))) is Detector


def test_frames_of_a_batch_with_their_own_targets_share_each_encoder_pass(monkeypatch):
    """Several robots' frames in one execution, each with its own targets, go through
    the detector in lockstep (one scoring call per stage, not per frame) and each gets
    the answer it gets alone."""
    from clip_perception.serving.detect_model import DetectModel

    model = DetectModel(color_encoder.factory("cpu"))
    scenes = scene_set(3, seed=12)
    asks = [[scenes[0].target], [scenes[1].target, "cyan block"], ["green block"]]
    batch = [{protocol.FRAMES: s.image[None], protocol.REQUEST: np.array(
        [[wire.request_json("rgb", t, DetectorConfig())]], dtype=object)}
        for s, t in zip(scenes, asks)]
    scoring = []
    score_many = model.detector._score_many
    monkeypatch.setattr(model.detector, "_score_many",
                        lambda requests: scoring.append(len(requests)) or score_many(requests))
    out = model(batch)
    assert max(scoring) == 3 and len(scoring) < 3 * 2  # stages, each for all three frames
    local = Detector(color_encoder.factory("cpu"))
    for answer, scene, targets in zip(out, scenes, asks):
        want = local.detect(scene.image, targets)
        got = wire.decode_detection(answer)
        assert [(t.phrase, t.present, t.box) for t in got.targets] == [
            (t.phrase, t.present, t.box) for t in want.targets]
        np.testing.assert_allclose([t.score for t in got.targets],
                                   [t.score for t in want.targets], atol=1e-6)


def test_the_url_chooses_where_the_detector_runs():
    from clip_perception.core.encoder import ModelLoadError

    assert parse_triton_url("triton://h/n").detect == "server"
    assert parse_triton_url("triton://h:9/n?detect=local&timeout=2").detect == "local"
    with pytest.raises(ModelLoadError, match="detect='both'.*server, local"):
        parse_triton_url("triton://h/n?detect=both")


def test_a_multi_camera_batch_goes_out_as_concurrent_requests():
    """A node's batch of frames (one per camera): one request each, all in flight at once
    (so the server can batch them), each with the answer it gets alone; a frame the
    server fails raises for the batch (the loop then retries the frames one by one)."""
    import threading

    server = LocalServer(color_encoder.factory("cpu"))
    there, local = TritonDetector(remote(server)), Detector(color_encoder.factory("cpu"))
    scenes = scene_set(3, seed=14)
    together = threading.Barrier(3, timeout=10)  # broken unless all three are in flight
    infer = there.encoder._infer

    def in_flight(*args, **kwargs):
        together.wait()
        return infer(*args, **kwargs)

    there.encoder._infer = in_flight
    got = there.detect_batch([s.image for s in scenes], [scenes[0].target])
    assert server.detect_requests == 3
    for g, s in zip(got, scenes):
        want = local.detect(s.image, [scenes[0].target])
        assert [(t.present, t.box) for t in g.targets] == [
            (t.present, t.box) for t in want.targets]

    def fail_one(arrays):
        if server.detect_requests == 4:
            raise ServerError("ValueError: refused", "StatusCode.INTERNAL")

    server.before_detect_request = fail_one
    with pytest.raises(EncoderRequestError, match="refused"):
        there.detect_batch([s.image for s in scenes], [scenes[0].target])
