"""Each frame crosses the network once (:mod:`clip_perception.core.remote.triton_protocol`):
the server's frame cache, the image model's by-id requests and ``FRAME_MISSING``
answers, and :class:`TritonEncoder` against an in-process server (a stand-in for
``tritonclient.grpc`` that hands each request to the served image model), including
a server restart between a detector's passes and eviction under many clients."""

from __future__ import annotations

import threading
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import user_plugin

from clip_perception.core.detect.detector import Detector
from clip_perception.core.encoder import (
    EncoderRequestError,
    EncoderUnavailableError,
    ModelLoadError,
)
from clip_perception.core.io.image_formats import Frame
from clip_perception.core.remote import triton_protocol as protocol
from clip_perception.core.remote.triton_encoder import TritonEncoder, parse_triton_url
from clip_perception.serving.detect_model import DetectModel, detect_responses
from clip_perception.serving.frame_cache import FrameCache
from clip_perception.serving.window_model import (
    TextEmbedder,
    WindowEmbedder,
    each_request,
    image_responses,
    text_responses,
)
from clip_perception.testing import color_encoder, known_answer
from clip_perception.testing.scenes import scene_set

ENCODERS = {"color": lambda: color_encoder.factory("cpu"),
            **{name: (lambda n=name: known_answer.load(n, "cpu"))
               for name in ("linear", "concave", "noisy", "clip_like")}}


# --- the cache -------------------------------------------------------------------------
def test_frame_cache_keeps_copies_and_evicts_least_recently_used_by_count_and_bytes():
    frame = np.zeros((4, 5, 3), np.uint8)  # 60 bytes
    cache = FrameCache(max_frames=3, max_bytes=150)
    kept = cache.put((1, 1), frame)
    frame[:] = 9  # the request's buffer is reused: the cache must not see it
    assert cache.get((1, 1)).max() == 0 and not kept.flags.writeable
    cache.put((1, 2), frame)
    assert cache.get((1, 1)) is not None  # (1, 1) is now the most recent
    cache.put((2, 1), frame)  # 180 bytes > 150: the least recent, (1, 2), goes
    assert cache.get((1, 2)) is None and len(cache) == 2 and cache.bytes == 120
    cache = FrameCache(max_frames=2, max_bytes=10**6)
    for i in range(5):
        cache.put((7, i), frame)
    assert [cache.get((7, i)) is not None for i in range(5)] == [False] * 3 + [True] * 2
    assert cache.evicted == 3
    big = FrameCache(max_frames=3, max_bytes=50)
    assert big.put((1, 1), frame).shape == frame.shape and len(big) == 0  # too big to keep


def test_frame_cache_is_consistent_under_concurrent_clients():
    cache = FrameCache(max_frames=8, max_bytes=8 * 300)
    errors = []

    def client(c):
        rng = np.random.default_rng(c)
        for i in range(300):
            frame = np.full((10, 10, 3), (c * 31 + i) % 251, np.uint8)
            cache.put((c, i), frame)
            got = cache.get((c, int(rng.integers(0, i + 1))))
            if got is not None and got.shape != frame.shape:
                errors.append(got.shape)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) <= 8 and cache.bytes == 300 * len(cache) <= 8 * 300
    for (c, i), frame in list(cache._frames.items()):
        assert frame[0, 0, 0] == (c * 31 + i) % 251  # every key still holds its own frame


# --- the image model ---------------------------------------------------------------------
def request(frame, ids, boxes):
    return {protocol.FRAMES: frame[None], protocol.FRAME_IDS: np.array([ids], np.uint64),
            protocol.BOXES: boxes[None]}


@pytest.mark.slow
def test_image_model_answers_by_id_what_it_answered_for_the_frame_and_flags_missing_ones():
    encoder = color_encoder.factory("cpu")
    embed, cache = WindowEmbedder(encoder), FrameCache()
    scenes = scene_set(2, seed=3)
    boxes = Detector(encoder).windows_for(640, 480)
    placeholder = np.zeros((1, 1, 3), np.uint8)
    sent = image_responses(embed, [request(scenes[0].image, (5, 11, 1), boxes)], cache)[0]
    assert sent[protocol.STATUS].tolist() == [[protocol.OK]]
    # one dynamic batch: a named frame the server holds, one it does not, and a new frame
    out = image_responses(embed, [request(placeholder, (5, 11, 0), boxes),
                                  request(placeholder, (5, 12, 0), boxes),
                                  request(scenes[1].image, (6, 11, 1), boxes)], cache)
    np.testing.assert_array_equal(out[0][protocol.EMBEDDINGS], sent[protocol.EMBEDDINGS])
    assert out[1][protocol.STATUS].tolist() == [[protocol.FRAME_MISSING]]
    assert out[1][protocol.EMBEDDINGS].shape == sent[protocol.EMBEDDINGS].shape
    assert not out[1][protocol.EMBEDDINGS].any()
    alone = image_responses(embed, [request(scenes[1].image, (6, 11, 1), boxes)])[0]
    np.testing.assert_array_equal(out[2][protocol.EMBEDDINGS], alone[protocol.EMBEDDINGS])
    assert cache.received == 2 and cache.hits == 1 and cache.misses == 1
    # UNCACHED frames are used but not kept; all-missing batches answer zeros
    image_responses(embed, [request(scenes[0].image, (5, protocol.UNCACHED, 1), boxes)], cache)
    assert len(cache) == 2
    lost = image_responses(embed, [request(placeholder, (9, 9, 0), boxes)], FrameCache())[0]
    assert lost[protocol.STATUS].tolist() == [[protocol.FRAME_MISSING]]
    assert lost[protocol.EMBEDDINGS].shape == (1, len(boxes), 1)  # never empty


# --- the client against an in-process server ------------------------------------------------
class LocalServer:
    """The served models of ``clip_perception.serve`` in this process; ``restart()``
    forgets every frame, as a restarted server would."""

    def __init__(self, encoder, cache: FrameCache | None = None, ids_input: bool = True):
        self.embed, self.text = WindowEmbedder(encoder), TextEmbedder(encoder)
        self.detect = DetectModel(encoder)  # NAME_detect, for test_triton_detect.py
        self.detect_requests = 0
        self.before_detect_request = None  # a hook: called with the request's arrays
        self.cache = cache if cache is not None else FrameCache()
        self.lock = threading.Lock()  # the fake serialises requests, as one instance does
        self.requests: list[tuple[bool, int]] = []  # (carried a frame, bytes of frames)
        self.ids_input = ids_input
        self.before_image_request = None  # a hook: called with the request count

    def restart(self):
        self.cache = FrameCache(self.cache.max_frames, self.cache.max_bytes)

    def grpc_module(self):
        server = self

        class Tensor:
            def __init__(self, name, shape, dtype):
                self.name = name

            def set_data_from_numpy(self, array):
                self.array = np.array(array)  # the wire copies

        class Result:
            def __init__(self, out):
                self.out = out

            def as_numpy(self, name):
                return self.out[name]

        class Client:
            def __init__(self, url):
                pass

            def infer(self, model, inputs, outputs=None, client_timeout=None):
                arrays = {t.name: t.array for t in inputs}
                with server.lock:
                    if model.endswith(protocol.IMAGE_SUFFIX):
                        if server.before_image_request:
                            server.before_image_request(len(server.requests))
                        ids = arrays[protocol.FRAME_IDS]
                        server.requests.append((bool(ids[0][protocol.SENT]),
                                                arrays[protocol.FRAMES].nbytes))
                        return Result(image_responses(server.embed, [arrays], server.cache)[0])
                    if model.endswith(protocol.DETECT_SUFFIX):
                        if server.before_detect_request:
                            server.before_detect_request(arrays)
                        server.detect_requests += 1
                        out = each_request(detect_responses, server.detect, [arrays])[0]
                        if isinstance(out, str):  # the model raised: the server's answer
                            raise ServerError(out, "StatusCode.INTERNAL")
                        return Result(out)
                    return Result(text_responses(server.text, [arrays])[0])

            def get_model_config(self, name, client_timeout=None):
                inputs = [protocol.FRAMES, protocol.BOXES] + (
                    [protocol.FRAME_IDS] if server.ids_input else [])
                return SimpleNamespace(config=SimpleNamespace(
                    max_batch_size=8, input=[SimpleNamespace(name=n) for n in inputs]))

            def close(self):
                pass

        return SimpleNamespace(InferenceServerClient=Client, InferInput=Tensor,
                               InferRequestedOutput=lambda name: name,
                               np_to_triton_dtype=lambda dtype: str(dtype))


def remote(server: LocalServer) -> TritonEncoder:
    return TritonEncoder(parse_triton_url("triton://127.0.0.1:1/enc"), server.grpc_module())


def same(a, b):
    return ([(t.present, t.box) for t in a.targets] == [(t.present, t.box) for t in b.targets]
            and np.allclose([t.score for t in a.targets], [t.score for t in b.targets],
                            atol=1e-5))


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_each_frame_is_sent_once_per_detect_and_answers_equal_in_process(kind):
    server = LocalServer(ENCODERS[kind]())
    encoder = remote(server)
    local, there = Detector(ENCODERS[kind]()), Detector(encoder)
    scenes = scene_set(4, seed=11)
    for scene in scenes:
        targets = [scene.target, "cyan block"]
        assert same(local.detect(scene.image, targets), there.detect(scene.image, targets))
    frames = [nbytes for carried, nbytes in server.requests if carried]
    assert len(frames) == len(scenes) == server.cache.received  # once per detect
    assert frames == [scenes[0].image.nbytes] * len(scenes)
    assert len(server.requests) > len(frames)  # the refine passes went by id
    assert sum(n for _, n in server.requests) < 1.2 * sum(s.image.nbytes for s in scenes)
    assert (encoder.frames_sent, encoder.frames_resent) == (len(scenes), 0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["color", "clip_like"])
def test_a_server_restart_between_the_coarse_and_the_fine_pass_costs_one_resend(kind):
    server = LocalServer(ENCODERS[kind]())
    encoder = remote(server)
    local, there = Detector(ENCODERS[kind]()), Detector(encoder)
    scene = scene_set(1, seed=5)[0]
    server.before_image_request = lambda count: server.restart() if count == 1 else None
    assert same(local.detect(scene.image, [scene.target]),
                there.detect(scene.image, [scene.target]))
    assert encoder.frames_resent == 1 and encoder.frames_sent == 2
    assert [carried for carried, _ in server.requests[:3]] == [True, False, True]


@pytest.mark.slow
def test_a_frame_changed_in_place_is_sent_again():
    """The client recognises frames by their pixels, not by the buffer they arrive in."""
    server = LocalServer(color_encoder.factory("cpu"))
    there, local = Detector(remote(server)), Detector(color_encoder.factory("cpu"))
    scenes = scene_set(3, seed=8)
    buffer = scenes[0].image.copy()
    for scene in scenes:
        buffer[:] = scene.image  # a driver reusing one buffer for every frame
        assert same(local.detect(scene.image, [scene.target]),
                    there.detect(buffer, [scene.target]))
    assert server.cache.received == len(scenes)


@pytest.mark.slow
def test_eviction_under_many_clients_is_resent_transparently():
    """Eight robots share a server that keeps two frames: frames are evicted between a
    client's passes, and every client still gets the in-process answers."""
    server = LocalServer(color_encoder.factory("cpu"), FrameCache(max_frames=2))
    scenes = scene_set(8, seed=21)
    local = Detector(color_encoder.factory("cpu"))
    want = [local.detect(s.image, [s.target, "cyan block"]) for s in scenes]
    got, encoders = {}, []

    def client(i):
        encoder = remote(server)
        encoders.append(encoder)
        detector = Detector(encoder)
        for _ in range(2):
            got[i] = detector.detect(scenes[i].image, [scenes[i].target, "cyan block"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(scenes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(same(want[i], got[i]) for i in range(len(scenes)))
    assert server.cache.evicted > 0 and sum(e.frames_resent for e in encoders) > 0
    assert len(server.cache) <= 2


def test_a_server_without_frame_ids_is_named_as_an_older_protocol():
    with pytest.raises(ModelLoadError, match="older protocol"):
        remote(LocalServer(color_encoder.factory("cpu"), ids_input=False))


@pytest.mark.slow
def test_a_bgr_frame_is_converted_and_sent_once_per_detect(monkeypatch):
    """The client knows a frame by the pixels it arrived with: its later passes neither
    convert it to RGB again nor send it; the same bytes in another order are another frame."""
    server = LocalServer(color_encoder.factory("cpu"))
    there, local = Detector(remote(server)), Detector(color_encoder.factory("cpu"))
    conversions = []
    to_rgb = Frame.to_rgb
    monkeypatch.setattr(Frame, "to_rgb", lambda self: conversions.append(1) or to_rgb(self))
    for scene in scene_set(2, seed=9):
        bgr = Frame(np.ascontiguousarray(scene.image[:, :, ::-1]), "bgr")
        before = len(conversions)
        assert same(local.detect(scene.image, [scene.target]), there.detect(bgr, [scene.target]))
        assert len(conversions) - before == 1
        as_rgb = Frame.from_rgb(bgr.pixels)  # the same bytes, read as RGB: not the same frame
        assert same(local.detect(bgr.pixels, [scene.target]), there.detect(as_rgb,
                                                                          [scene.target]))
    assert server.cache.received == 4


# --- request errors are not outages ------------------------------------------------------
class ServerError(Exception):
    """tritonclient's InferenceServerException as its gRPC client raises it."""

    def __init__(self, message, status):
        super().__init__(message)
        self._message, self._status = message, status

    def message(self):
        return self._message

    def status(self):
        return self._status


@pytest.mark.slow
@pytest.mark.parametrize("status, outage", [
    ("StatusCode.INTERNAL", False), ("StatusCode.INVALID_ARGUMENT", False),
    ("StatusCode.RESOURCE_EXHAUSTED", False),
    ("StatusCode.UNAVAILABLE", True), ("StatusCode.DEADLINE_EXCEEDED", True), (None, True)])
def test_a_failed_request_keeps_the_connection_and_an_outage_drops_it(status, outage):
    """The server's error for one request (the model raised, out of memory, a shape it
    refused) is an EncoderRequestError with the server's message, and the connection
    stays; unreachable or too slow is an EncoderUnavailableError and drops it."""
    server = LocalServer(color_encoder.factory("cpu"))
    module = server.grpc_module()
    opened = []
    client_class = module.InferenceServerClient

    def counting_client(url):
        opened.append(url)
        return client_class(url)

    module.InferenceServerClient = counting_client
    encoder = TritonEncoder(parse_triton_url("triton://127.0.0.1:1/enc"), module)
    scene = scene_set(1, seed=4)[0]
    boxes = Detector(color_encoder.factory("cpu")).windows_for(640, 480)[:3]
    encoder.encode_windows(scene.image, boxes)
    assert len(opened) == 1

    def fail(count):
        raise ServerError("ValueError: the model refused this frame", status)

    server.before_image_request = fail
    expected = EncoderUnavailableError if outage else EncoderRequestError
    with pytest.raises(expected, match="the model refused this frame") as caught:
        encoder.encode_windows(scene.image, boxes)
    assert not isinstance(caught.value, EncoderUnavailableError if not outage
                          else EncoderRequestError)
    assert (encoder.failures, encoder.request_errors) == ((1, 0) if outage else (0, 1))
    server.before_image_request = None
    encoder.encode_windows(scene.image, boxes)
    assert len(opened) == (2 if outage else 1)  # only an outage opens a new connection


@pytest.mark.slow
def test_one_bad_request_in_a_dynamic_batch_fails_alone(tmp_path):
    """The model raises on one request of a batch: that request gets the error, the
    others the answers they get alone (before, the whole batch failed)."""
    encoder = user_plugin.load(user_plugin.write(tmp_path))
    embed, cache = WindowEmbedder(encoder), FrameCache()
    scenes = scene_set(2, seed=6)
    boxes = Detector(encoder).windows_for(640, 480)[:5]
    black = np.zeros_like(scenes[0].image)
    batch = [request(scenes[0].image, (1, 1, 1), boxes), request(black, (2, 1, 1), boxes),
             request(scenes[1].image, (3, 1, 1), boxes)]
    out = each_request(partial(image_responses, cache=cache), embed, batch)
    assert out[1] == f"ValueError: {user_plugin.MESSAGE}"
    for i in (0, 2):
        alone = image_responses(embed, [batch[i]])[0]
        np.testing.assert_array_equal(out[i][protocol.EMBEDDINGS], alone[protocol.EMBEDDINGS])
    good = each_request(image_responses, embed, [batch[0], batch[2]])  # no error: one pass
    assert [o[protocol.STATUS].tolist() for o in good] == [[[protocol.OK]]] * 2
