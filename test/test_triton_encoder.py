"""The remote encoder's parts that need no server: URL parsing, the missing-client
error, the server's window model against in-process cropping, the detector's
``encode_windows`` path, and the server environment's library path."""

from __future__ import annotations

import builtins
import os
import sys
import time

import numpy as np
import pytest
import torch

from clip_perception.core.detect.crops import FrameUploader, crop_windows
from clip_perception.core.detect.detector import Detector
from clip_perception.core.encoder import ModelLoadError
from clip_perception.core.io.image_formats import Frame
from clip_perception.core.model.loading import load_encoder
from clip_perception.core.remote.triton_encoder import DEFAULT_PORT, parse_triton_url
from clip_perception.serving.environment import python_lib_dir, with_python_lib_dir
from clip_perception.serving.window_model import TextEmbedder, WindowEmbedder
from clip_perception.testing import color_encoder, random_clip
from clip_perception.testing.scenes import make_scene

ENCODERS = {
    "color": lambda: color_encoder.factory("cpu"),
    "tiny_clip": lambda: random_clip.random_clip("tiny", "cpu", "fp32", seed=1),
}


@pytest.mark.parametrize("url, expected", [
    ("triton://127.0.0.1:9001/clip", ("127.0.0.1", 9001, "clip", 30.0, 10.0)),
    ("triton://gpu-server/vit_b32", ("gpu-server", DEFAULT_PORT, "vit_b32", 30.0, 10.0)),
    ("triton://[::1]:8001/clip?timeout=2.5&connect_timeout=1",
     ("::1", 8001, "clip", 2.5, 1.0)),
])
def test_parses_triton_urls(url, expected):
    a = parse_triton_url(url)
    assert (a.host, a.port, a.name, a.timeout, a.connect_timeout) == expected


@pytest.mark.parametrize("url, words", [
    ("triton://127.0.0.1:8001/", "model name"),
    ("triton://:8001/clip", "host"),
    ("triton://127.0.0.1:99999/clip", "port"),
    ("triton://127.0.0.1:8001/clip?timeout=soon", "not a number"),
    ("triton://127.0.0.1:8001/clip?timeout=0", "> 0"),
    ("triton://127.0.0.1:8001/clip?retries=3", "unknown option"),
    ("triton://127.0.0.1:8001/a/b", "model name"),
])
def test_bad_triton_urls_say_what_is_wrong(url, words):
    with pytest.raises(ModelLoadError, match=words):
        load_encoder(url)


def test_without_tritonclient_a_triton_model_names_the_package(monkeypatch):
    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name == "tritonclient" or name.startswith("tritonclient."):
            raise ImportError(f"No module named '{name}' (blocked by the test)")
        return real_import(name, *args, **kwargs)

    for name in [m for m in list(sys.modules) if m.startswith("tritonclient")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(ModelLoadError, match=r"pip install 'tritonclient\[grpc\]'"):
        load_encoder("triton://127.0.0.1:8001/clip")


@pytest.mark.slow
def test_no_server_is_a_retryable_model_load_error_after_connect_timeout():
    """Unreachable, not broken: ModelUnreachableError (a ModelLoadError), so a node keeps
    trying instead of failing to configure."""
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
    from clip_perception.core.encoder import ModelUnreachableError
    from clip_perception.tools.triton_process import free_ports

    port = free_ports(1)[0]  # nothing listens there
    start = time.monotonic()
    with pytest.raises(ModelUnreachableError, match="clip_perception.serve"):
        load_encoder(f"triton://127.0.0.1:{port}/clip?connect_timeout=1")
    assert time.monotonic() - start < 8
    assert issubclass(ModelUnreachableError, ModelLoadError)


def frames(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [make_scene(rng, target_colour=c).image for c in ("red", "blue", "green")[:n]]


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_window_model_equals_in_process_cropping(kind):
    encoder = ENCODERS[kind]()
    detector = Detector(encoder)
    embed = WindowEmbedder(encoder)
    images = frames()
    boxes = [detector.windows_for(640, 480), np.array([[5, 7, 300, 200]], np.float32),
             detector.windows_for(640, 480)[::7]]
    got = embed(images, boxes)  # one encoder pass for all three frames
    for image, b, emb in zip(images, boxes, got):
        uploaded = FrameUploader("cpu")(Frame.from_rgb(image))
        if hasattr(encoder, "encode_normalized"):
            want = encoder.encode_normalized(crop_windows(encoder.normalize(uploaded), b,
                                                          encoder.input_size))
        else:
            want = encoder.encode_images(crop_windows(uploaded, b, encoder.input_size))
        assert emb.shape == tuple(want.shape)
        np.testing.assert_allclose(emb, want.numpy(), rtol=1e-5, atol=1e-5)


def test_window_model_rejects_what_is_not_a_uint8_rgb_frame():
    embed = WindowEmbedder(color_encoder.factory("cpu"))
    with pytest.raises(ValueError, match="uint8"):
        embed([np.zeros((4, 4), np.uint8)], [np.zeros((1, 4), np.float32)])
    with pytest.raises(ValueError, match="box sets"):
        embed([np.zeros((4, 4, 3), np.uint8)], [])


def test_text_model_reports_scale_and_size():
    encoder = color_encoder.factory("cpu")
    text = TextEmbedder(encoder)
    assert (text.logit_scale, text.input_size) == (10.0, 64)
    np.testing.assert_array_equal(text(["red block"]), encoder.encode_texts(["red block"]))


class WindowsEncoder:
    """An in-process stand-in for a remote encoder: only ``encode_windows`` crops."""

    def __init__(self, encoder):
        self.inner = encoder
        self.input_size = encoder.input_size
        self.logit_scale = getattr(encoder, "logit_scale", 100.0)
        self.embed = WindowEmbedder(encoder)
        self.calls = []

    def encode_windows(self, frame, boxes):
        assert isinstance(frame, Frame), "the detector hands over the frame, not crops"
        self.calls.append(len(boxes))
        return torch.from_numpy(self.embed([frame.to_rgb()], [boxes])[0])

    def encode_images(self, images):
        raise AssertionError("a remote encoder must get frames and boxes, not crops")

    def encode_texts(self, texts):
        return self.inner.encode_texts(texts)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_detector_hands_frame_and_boxes_to_encode_windows(kind):
    local = Detector(ENCODERS[kind]())
    remote_encoder = WindowsEncoder(ENCODERS[kind]())
    remote = Detector(remote_encoder)
    for colour, image in zip(("red", "blue", "green"), frames()):
        targets = [f"{colour} block", "yellow block"]
        a = local.detect(image, targets)
        b = remote.detect(image, targets)
        assert [t.present for t in a.targets] == [t.present for t in b.targets]
        assert [t.box for t in a.targets] == [t.box for t in b.targets]
        np.testing.assert_allclose([t.score for t in a.targets], [t.score for t in b.targets],
                                   atol=1e-5)
    assert remote_encoder.calls and sum(remote_encoder.calls) >= 3 * len(
        local.windows_for(640, 480))


def test_server_environment_puts_python_lib_dir_on_ld_library_path():
    libdir = python_lib_dir()
    if libdir is None:
        pytest.skip("this interpreter has no shared libpython (a static build needs nothing)")
    env = with_python_lib_dir({"LD_LIBRARY_PATH": "/opt/x"})
    assert env["LD_LIBRARY_PATH"].split(os.pathsep) == [libdir, "/opt/x"]
    assert with_python_lib_dir(env) == env  # added once
    assert with_python_lib_dir({})["LD_LIBRARY_PATH"] == libdir


def test_serve_without_a_server_environment_says_how_to_make_one(tmp_path):
    import subprocess

    from clip_perception.serving.environment import REPO_ROOT, server_problem

    if server_problem() is None:
        pytest.skip("this environment can run the server itself")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT),
           "CLIP_PERCEPTION_TRITON_PYTHON": str(tmp_path / "no-such-python")}
    out = subprocess.run([sys.executable, "-m", "clip_perception.serve", "--model",
                          "clip_perception.testing.color_encoder:factory"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0
    assert "make triton-setup" in out.stderr and server_problem() in out.stderr
