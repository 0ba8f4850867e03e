"""A real Triton server (``python -m clip_perception.serve``) on 127.0.0.1.

The remote encoder must give the in-process answers on the same frames, for
more than one encoder and for a user's encoder module found only on
``PYTHONPATH``; a model's error must fail only its request; a killed server
must cost clean per-call exceptions, and a restarted one must be used again
within 5 s of being ready.
The server runs in .venv-triton (``make triton-setup``; ``make test`` makes it).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import user_plugin
from optional import needs_module

from clip_perception.core.detect.box_embeddings import box_embeddings, tracked_boxes
from clip_perception.core.detect.crops import FrameUploader, crop_windows
from clip_perception.core.detect.detector import Detector
from clip_perception.core.encoder import EncoderRequestError, EncoderUnavailableError
from clip_perception.core.io.image_formats import Frame
from clip_perception.core.model.loading import load_encoder
from clip_perception.core.remote.triton_detector import TritonDetector, make_detector
from clip_perception.serving.environment import triton_python
from clip_perception.testing import color_encoder, random_clip
from clip_perception.testing.scenes import make_scene
from clip_perception.tools.triton_process import TritonServerProcess

pytestmark = [
    pytest.mark.slow,
    needs_module("tritonclient.grpc", "tritonclient[grpc] is not installed (requirements-dev.txt)"),
    pytest.mark.skipif(triton_python() is None, reason="no .venv-triton for the server: run "
                       "`make triton-setup` (`make test` does)"),
]

MODELS = {  # served spec -> the same encoder in this process
    "color": ("clip_perception.testing.color_encoder:factory",
              lambda: color_encoder.factory("cpu")),
    "tiny_clip": ("clip_perception.testing.random_clip:tiny",
                  lambda: random_clip.tiny("cpu")),
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """One server per model, started together (each takes ~10 s to come up)."""
    log_dir = tmp_path_factory.mktemp("triton")
    started = {kind: TritonServerProcess(spec, log_dir / f"{kind}.log", name=kind).start()
               for kind, (spec, _) in MODELS.items()}
    # a user's encoder module, importable only through PYTHONPATH (serve runs in the
    # repository, not in the module's directory)
    plugins = user_plugin.write(tmp_path_factory.mktemp("plugins"))
    started["plugin"] = TritonServerProcess(user_plugin.SPEC, log_dir / "plugin.log",
                                            name="plugin", python_path=(plugins,)).start()
    # a server that keeps one frame: other clients' frames evict a client's between passes
    started["one_frame"] = TritonServerProcess(
        MODELS["color"][0], log_dir / "one_frame.log", name="one_frame",
        extra_args=("--frame-cache-frames", "1")).start()
    try:
        for server in started.values():
            server.wait_ready(180)
        started["plugin"].directory = plugins
        yield started
    finally:
        for server in started.values():
            server.stop()


def run_clients(client, count: int, timeout: float) -> None:
    """``client(i)`` for ``i`` in ``range(count)``, each on a thread of its own, all at once."""
    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)


def scenes(seed=0):
    rng = np.random.default_rng(seed)
    return [(c, make_scene(rng, target_colour=c, present=p, distractors=2).image)
            for c, p in (("red", True), ("blue", True), ("green", False), ("yellow", True))]


def local_windows(encoder, image, boxes):
    uploaded = FrameUploader("cpu")(Frame.from_rgb(image))
    if hasattr(encoder, "encode_normalized"):
        return encoder.encode_normalized(crop_windows(encoder.normalize(uploaded), boxes,
                                                      encoder.input_size))
    return encoder.encode_images(crop_windows(uploaded, boxes, encoder.input_size))


@pytest.mark.parametrize("kind", [*sorted(MODELS), "plugin"])
def test_remote_encoder_gives_the_in_process_answers(servers, kind):
    """For ``plugin``: ``serve`` hosts a module:factory that only PYTHONPATH makes importable
    (before, Triton's Python backend stub, which ignores PYTHONPATH, failed to load it)."""
    remote = load_encoder(servers[kind].url)
    local = (user_plugin.load(servers[kind].directory) if kind == "plugin"
             else MODELS[kind][1]())
    assert remote.input_size == local.input_size
    assert remote.logit_scale == pytest.approx(float(getattr(local, "logit_scale", 100.0)))
    texts = ["a red block", "a table", "something else entirely"]
    np.testing.assert_allclose(remote.encode_texts(texts), local.encode_texts(texts),
                               rtol=1e-5, atol=1e-5)
    local_detector, remote_detector = Detector(local), Detector(remote)
    for colour, image in scenes():
        boxes = local_detector.windows_for(640, 480)
        np.testing.assert_allclose(remote.encode_windows(image, boxes),
                                   local_windows(local, image, boxes), rtol=1e-5, atol=1e-5)
        targets = [f"{colour} block", "cyan block"]
        want = local_detector.detect(image, targets)
        got = remote_detector.detect(image, targets)
        assert [t.present for t in got.targets] == [t.present for t in want.targets]
        assert [t.box for t in got.targets] == [t.box for t in want.targets]
        assert got.crops == want.crops
    # each detect sent its frame once; the later passes named it by id
    assert remote.frames_sent == len(scenes()) and remote.frames_resent == 0
    assert remote.id_requests >= len(scenes())
    # crops given as images (8-bit frames of their own) match up to 8-bit rounding
    crops = crop_windows(FrameUploader("cpu")(Frame.from_rgb(scenes()[0][1])),
                         local_detector.windows_for(640, 480)[:11], local.input_size)
    quantised = (crops * 255).round() / 255
    np.testing.assert_allclose(remote.encode_images(crops), local.encode_images(quantised),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", [*sorted(MODELS), "plugin"])
def test_the_detector_on_the_server_gives_the_in_process_answers(servers, kind):
    """``triton://`` runs the whole detector on the server, one request per frame, with the
    in-process presence, boxes, scores, heatmaps and the found regions' embeddings. That
    the server has a detect model at all shows it runs this tree's code."""
    remote = load_encoder(servers[kind].url)
    local = (user_plugin.load(servers[kind].directory) if kind == "plugin"
             else MODELS[kind][1]())
    there, here = make_detector(remote), Detector(local)
    assert isinstance(there, TritonDetector)
    for colour, image in scenes():
        targets = [f"{colour} block", "cyan block"]
        want = here.detect(image, targets, with_heatmap=True)
        got = there.detect(image, targets, with_heatmap=True)
        assert [t.present for t in got.targets] == [t.present for t in want.targets]
        assert [t.box for t in got.targets] == [t.box for t in want.targets]
        assert [t.second_box for t in got.targets] == [t.second_box for t in want.targets]
        np.testing.assert_allclose([t.score for t in got.targets],
                                   [t.score for t in want.targets], atol=1e-5)
        assert got.crops == want.crops
        for g, w in zip(got.heatmaps, want.heatmaps):
            np.testing.assert_allclose(g, w, atol=1e-5)
        boxes = tracked_boxes(want)
        if boxes:
            np.testing.assert_allclose(got.box_embeddings,
                                       box_embeddings(local, Frame.from_rgb(image), boxes),
                                       atol=1e-5)
    assert there.requests == len(scenes())  # one request per frame
    assert remote.frames_sent == remote.id_requests == 0  # no image-model traffic


def test_concurrent_detect_requests_share_executions_and_a_bad_one_fails_alone(servers):
    """Robots' detect requests that arrive while the model is busy run as one execution,
    frames of other sizes included; the one the model fails is an EncoderRequestError
    with the model's message, the connection stays, and the others get their answers."""
    from clip_perception.tools.triton_benchmark import model_counts

    server = servers["plugin"]
    local = Detector(user_plugin.load(server.directory))
    frames = [image for _, image in scenes(seed=3)]
    asks = [(frames[0], "red block"), (frames[1][:240], "blue block"),
            (np.zeros_like(frames[2]), "green block")]
    detectors = [make_detector(load_encoder(server.url)) for _ in range(4)]
    for d in detectors[1:]:
        d.set_targets(["red block", "blue block", "green block"])
    black = detectors[3]
    client = black.encoder._get_client()
    with pytest.raises(EncoderRequestError, match=user_plugin.MESSAGE):
        black.detect(asks[2][0], [asks[2][1]])
    assert black.encoder._get_client() is client
    assert (black.encoder.failures, black.encoder.request_errors) == (0, 1)
    grey = np.full((48, 64, 3), user_plugin.SLOW_GREY, np.uint8)
    before = model_counts(server, "_detect")
    results, errors = {}, []

    def run(i):
        try:
            if i == 0:
                results[0] = detectors[0].detect(grey, ["red block"])
                return
            time.sleep(0.5)  # the slow frame holds the model
            frame, target = asks[i - 1]
            results[i] = detectors[i].detect(frame, [target])
        except EncoderRequestError as exc:
            errors.append((i, exc))

    run_clients(run, 4, 60)
    requests, executions = (a - b for a, b in zip(model_counts(server, "_detect",
                                                               before[0] + 4), before))
    assert requests == 4 and executions == 2, f"{requests} requests, {executions} executions"
    assert [i for i, _ in errors] == [3] and user_plugin.MESSAGE in str(errors[0][1])
    for i in (1, 2):
        frame, target = asks[i - 1]
        want = local.detect(frame, [target])
        assert [(t.present, t.box) for t in results[i].targets] == [
            (t.present, t.box) for t in want.targets]


def test_concurrent_clients_batched_together_each_get_their_own_answers(servers):
    """Requests from several robots at once share dynamic batches; none gets another's."""
    local = MODELS["color"][1]()
    frames = [image for _, image in scenes(seed=5)] * 2
    boxes = Detector(local).windows_for(640, 480)
    results: dict[int, np.ndarray] = {}

    def client(i):
        encoder = load_encoder(servers["color"].url)
        for _ in range(3):
            results[i] = encoder.encode_windows(frames[i], boxes).numpy()

    run_clients(client, len(frames), 60)
    for i, image in enumerate(frames):
        np.testing.assert_allclose(results[i], local_windows(local, image, boxes), atol=1e-6)


def test_a_model_error_fails_its_request_only_and_keeps_the_connection(servers):
    """The model raises on a frame: that call is an EncoderRequestError with the model's
    message, not an outage; the connection stays and the other clients' frames,
    batched with it, get their answers."""
    server = servers["plugin"]
    local = user_plugin.load(server.directory)
    frames = [image for _, image in scenes(seed=9)]
    boxes = Detector(local).windows_for(640, 480)[:9]
    black = np.zeros_like(frames[0])
    refused = load_encoder(server.url)
    client = refused._get_client()
    with pytest.raises(EncoderRequestError, match=user_plugin.MESSAGE):
        refused.encode_windows(black, boxes)
    assert refused._get_client() is client and (refused.failures, refused.request_errors) == (0, 1)
    np.testing.assert_allclose(refused.encode_windows(frames[0], boxes),
                               local_windows(local, frames[0], boxes), atol=1e-6)

    results, errors = {}, []

    def client_run(i):  # client 0 sends black frames, the others good ones, all at once
        encoder = load_encoder(server.url)
        for _ in range(4):
            try:
                results[i] = encoder.encode_windows(black if i == 0 else frames[i], boxes)
            except EncoderRequestError as exc:
                errors.append((i, exc))

    run_clients(client_run, len(frames), 60)
    assert {i for i, _ in errors} == {0} and len(errors) == 4
    for i in range(1, len(frames)):
        np.testing.assert_allclose(results[i], local_windows(local, frames[i], boxes), atol=1e-6)


def test_requests_of_other_shapes_share_a_dynamic_batch(servers):
    """While the model is busy, requests of different frame sizes and box counts (a
    coarse pass, refine passes by id) queue and run as one execution (ragged batches;
    before, Triton batched equal shapes only and these took one execution each)."""
    from clip_perception.tools.triton_benchmark import image_counts

    server = servers["plugin"]
    local = user_plugin.load(server.directory)
    frames = [image for _, image in scenes(seed=3)]
    grey = np.full((48, 64, 3), user_plugin.SLOW_GREY, np.uint8)
    encoders = [load_encoder(server.url) for _ in range(4)]
    asks = [(frames[0], 3), (frames[1][:240], 5), (frames[2], 11)]
    for encoder, (frame, k) in zip(encoders[1:], asks):  # sent once: later asks go by id
        encoder.encode_windows(frame, Detector(local).windows_for(*frame.shape[1::-1])[:k])
    before = image_counts(server)
    results = {}

    def client(i):
        if i == 0:
            results[0] = encoders[0].encode_windows(grey, np.array([[0, 0, 64, 48]], np.float32))
            return
        time.sleep(0.5)  # the slow request holds the model
        frame, k = asks[i - 1]
        results[i] = encoders[i].encode_windows(
            frame, Detector(local).windows_for(*frame.shape[1::-1])[k:2 * k])

    run_clients(client, 4, 60)
    requests, executions = (a - b for a, b in zip(image_counts(server, before[0] + 4),
                                                  before))
    assert len(results) == 4 and requests == 4
    assert executions == 2, f"{requests} requests took {executions} executions"
    for i, (frame, k) in enumerate(asks, start=1):
        boxes = Detector(local).windows_for(*frame.shape[1::-1])[k:2 * k]
        np.testing.assert_allclose(results[i], local_windows(local, frame, boxes), atol=1e-6)


def test_server_outage_gives_clean_errors_and_recovers_within_5_s(servers):
    kind = "color"
    server = servers[kind]
    remote = load_encoder(server.url + "?timeout=5")
    detector = Detector(remote)
    on_server = make_detector(load_encoder(server.url + "?timeout=5"))
    assert isinstance(on_server, TritonDetector)
    colour, image = scenes()[0]
    before = detector.detect(image, [f"{colour} block"])
    assert before.present
    assert [t.box for t in on_server.detect(image, [f"{colour} block"]).targets] == [
        t.box for t in before.targets]

    server.stop(hard=True)  # SIGKILL: tritonserver and the Python backend go at once
    for _ in range(3):
        start = time.monotonic()
        with pytest.raises(EncoderUnavailableError, match=rf"triton://127\.0\.0\.1:\d+/{kind}"):
            detector.detect(image, [f"{colour} block"])
        assert time.monotonic() - start < 5.5, "a down server must fail within the timeout"
    with pytest.raises(EncoderUnavailableError):
        detector.set_targets(["a never embedded phrase"])  # text embedding: a clean error too
    with pytest.raises(EncoderUnavailableError):
        remote.encode_texts(["red"])
    for call in (lambda: on_server.detect(image, [f"{colour} block"]),
                 lambda: on_server.set_targets(["another never embedded phrase"])):
        start = time.monotonic()
        with pytest.raises(EncoderUnavailableError, match=rf"triton://127\.0\.0\.1:\d+/{kind}"):
            call()
        assert time.monotonic() - start < 5.5

    server.start()
    server.wait_ready(180)
    ready = time.monotonic()

    def once_recovered(call):
        """``call()``'s answer once the server answers, within 5 s of its return."""
        while True:
            try:
                return call()
            except EncoderUnavailableError:
                assert time.monotonic() - ready < 5.0, \
                    "not recovered within 5 s of the server's return"
                time.sleep(0.05)

    after = once_recovered(lambda: detector.detect(image, [f"{colour} block"]))
    assert time.monotonic() - ready < 5.0
    assert [t.box for t in after.targets] == [t.box for t in before.targets]
    again = once_recovered(lambda: on_server.detect(image, [f"{colour} block"]))  # on the server
    assert [t.box for t in again.targets] == [t.box for t in before.targets]
    on_server.set_targets(["another never embedded phrase"])
    detector.set_targets(["a never embedded phrase"])  # text works again too


def test_a_server_restarted_between_the_coarse_and_the_fine_pass_is_sent_the_frame_again(
        servers):
    server = servers["color"]
    remote = load_encoder(server.url + "?timeout=10")
    colour, image = scenes()[1]
    want = Detector(MODELS["color"][1]()).detect(image, [f"{colour} block"])
    coarse = remote.encode_windows

    def restart_after_coarse(frame, boxes):
        out = coarse(frame, boxes)
        if remote.frames_sent == 1 and remote.id_requests == 0:
            server.stop(hard=True)
            server.start()
            server.wait_ready(180)
            deadline = time.monotonic() + 30
            while True:  # the connection reconnects (that path has a test of its own)
                try:
                    remote.encode_texts(["red"])
                    break
                except EncoderUnavailableError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        return out

    remote.encode_windows = restart_after_coarse
    got = Detector(remote).detect(image, [f"{colour} block"])
    assert [(t.present, t.box) for t in got.targets] == [
        (t.present, t.box) for t in want.targets]
    assert remote.frames_resent == 1 and remote.frames_sent == 2


def test_frames_evicted_by_other_clients_are_sent_again(servers):
    """A server that keeps one frame, several clients: answers stay the in-process ones."""
    server, local = servers["one_frame"], MODELS["color"][1]()
    frames = [image for _, image in scenes(seed=7)]
    boxes = Detector(local).windows_for(640, 480)
    a, b = load_encoder(server.url), load_encoder(server.url)
    a.encode_windows(frames[0], boxes[:5])
    b.encode_windows(frames[1], boxes[:5])  # evicts a's frame
    np.testing.assert_allclose(a.encode_windows(frames[0], boxes[5:]),
                               local_windows(local, frames[0], boxes[5:]), atol=1e-6)
    assert (a.frames_sent, a.frames_resent, a.id_requests) == (2, 1, 1)

    results, encoders = {}, []

    def client(i):
        encoder = load_encoder(server.url)
        encoders.append(encoder)
        detector = Detector(encoder)
        for _ in range(2):
            results[i] = detector.detect(frames[i], [f"{scenes(seed=7)[i][0]} block"])

    run_clients(client, len(frames), 120)
    for i, image in enumerate(frames):
        want = Detector(local).detect(image, [f"{scenes(seed=7)[i][0]} block"])
        assert [(t.present, t.box) for t in results[i].targets] == [
            (t.present, t.box) for t in want.targets]


def test_serve_stops_tritonserver_and_removes_its_repository_on_sigterm(tmp_path):
    """serve's default runs tritonserver as its child on an exported repository in a
    temporary directory: SIGTERM to serve stops both, cleanly, and removes it."""
    import os
    import signal

    server = TritonServerProcess(MODELS["color"][0], tmp_path / "serve.log", name="term").start()
    try:
        server.wait_ready(180)
        # serve says it serves once its own readiness poll (every 0.2 s) sees the server
        deadline = time.monotonic() + 30
        while "on tritonserver's Python backend" not in server.log():
            assert time.monotonic() < deadline, server.log()[-2000:]
            time.sleep(0.1)
        home = server._home
        assert [p for p in os.listdir(home) if p.startswith("cp-serve-")]
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0, server.log()[-2000:]
        assert not [p for p in os.listdir(home) if p.startswith("cp-serve-")]
        with pytest.raises(ProcessLookupError):  # nothing of its process group is left
            os.killpg(server.proc.pid, 0)
    finally:
        server.stop()
