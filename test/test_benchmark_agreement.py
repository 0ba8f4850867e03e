"""The package's pipeline agrees with the tutorial one, and the benchmark runs.

No timing is asserted. A tiny random-weight CLIP keeps every test to seconds;
at 128x96 the default window set has 86 windows, as at 640x480.
"""

from __future__ import annotations

import copy
import re
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clip_perception.core.detect.crops import FrameUploader, crop_windows
from clip_perception.core.detect.detector import Detector
from clip_perception.core.detect.windows import window_grid
from clip_perception.core.io.image_formats import Frame
from clip_perception.core.model.clip_encoder import ClipEncoder
from clip_perception.core.model.clip_internals import import_clip
from clip_perception.testing.random_clip import ARCHITECTURES
from clip_perception.testing.scenes import scene_set
from clip_perception.tools import benchmark
from clip_perception.tools.benchmark import SINGLE_PASS, model_input
from clip_perception.tools.naive import (
    Agreement,
    best_sliding_window,
    clip_preprocess,
    naive_scores,
)

WIDTH, HEIGHT = 128, 96
CPU = torch.device("cpu")


def tiny_clip(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return import_clip().model.CLIP(**ARCHITECTURES["tiny"])


@pytest.fixture(scope="module")
def encoder() -> ClipEncoder:
    return ClipEncoder(tiny_clip(), CPU, torch.float32)


@pytest.fixture(scope="module")
def scenes():
    return scene_set(3, seed=0, width=WIDTH, height=HEIGHT, size_range=(12, 28))


@pytest.mark.slow
def test_same_windows_best_window_and_scores(encoder, scenes) -> None:
    detector = Detector(encoder, SINGLE_PASS)
    preprocess = clip_preprocess(encoder.input_size)
    agreement = Agreement(encoder.logit_scale)
    for scene in scenes:
        found = detector.detect(scene.image, [scene.target])
        np.testing.assert_array_equal(found.windows, window_grid(WIDTH, HEIGHT, (0.5, 0.25), 0.5))
        assert len(found.windows) == 86
        classes = detector.text.classes([scene.target])
        probs, evidence = naive_scores(encoder, scene.image, found.windows, classes, 1,
                                       encoder.logit_scale, preprocess)
        target = found.targets[0]
        agreement.add(found.windows, WIDTH, HEIGHT, target.window_scores, target.best_window,
                      probs[:, 0], evidence[:, 0])
    assert agreement.frames == len(scenes)
    assert agreement.passed, agreement.lines()


def test_each_naive_crop_is_nearest_its_own_package_crop(encoder, scenes) -> None:
    """Model-free and discriminative: with random weights scores are near-uniform."""
    windows = window_grid(WIDTH, HEIGHT, (0.5, 0.25), 0.5)
    square = (windows[:, 2] - windows[:, 0]) == (windows[:, 3] - windows[:, 1])
    preprocess = clip_preprocess(encoder.input_size)
    image = scenes[0].image
    package = model_input(encoder, image, windows)
    naive = torch.stack([preprocess(Image.fromarray(image).crop(tuple(int(v) for v in box)))
                         for box in windows])
    distance = (package[:, None] - naive[None]).abs().mean(dim=(2, 3, 4))  # [package, naive]
    own = distance.diagonal()
    assert (own[square] < 0.05).all(), own.max()  # ~3.5 grey levels of CLIP-normalised pixels
    assert torch.equal(distance.argmin(dim=0), torch.arange(len(windows)))


def test_agreement_check_can_fail() -> None:
    windows = window_grid(WIDTH, HEIGHT, (0.5, 0.25), 0.5)
    probs = np.linspace(0.1, 0.2, len(windows))
    evidence = np.linspace(0.0, 1.0, len(windows))
    best = tuple(int(v) for v in windows[-1])
    ok = Agreement(logit_scale=100.0)
    ok.add(windows, WIDTH, HEIGHT, probs, best, probs + 0.01, evidence)
    assert ok.passed
    scores_off = Agreement(logit_scale=100.0)
    scores_off.add(windows, WIDTH, HEIGHT, probs, best, probs + 0.05, evidence)
    assert not scores_off.passed
    other_best = Agreement(logit_scale=100.0)
    other_best.add(windows, WIDTH, HEIGHT, probs, tuple(int(v) for v in windows[1]), probs,
                   evidence)
    assert not other_best.passed
    assert best_sliding_window(windows, evidence, WIDTH, HEIGHT) == len(windows) - 1


class PlainEncoder:
    """The CLIP encoder without ``normalize``: the detector crops raw pixels."""

    def __init__(self, inner: ClipEncoder):
        self.inner = inner
        self.input_size, self.device, self.logit_scale = (
            inner.input_size, inner.device, inner.logit_scale)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner.encode_images(images)

    def encode_texts(self, texts):
        return self.inner.encode_texts(texts)


@pytest.mark.slow
def test_normalising_the_frame_before_cropping_changes_nothing(encoder, scenes) -> None:
    image = FrameUploader(CPU)(Frame.from_rgb(scenes[1].image))
    windows = window_grid(WIDTH, HEIGHT, (0.5, 0.25), 0.5)
    size = encoder.input_size
    torch.testing.assert_close(crop_windows(encoder.normalize(image), windows, size),
                               encoder.normalize(crop_windows(image, windows, size)),
                               rtol=0, atol=1e-5)
    fast = Detector(encoder, SINGLE_PASS).detect(scenes[1].image, [scenes[1].target])
    plain = Detector(PlainEncoder(encoder), SINGLE_PASS).detect(scenes[1].image,
                                                               [scenes[1].target])
    np.testing.assert_allclose(fast.targets[0].window_scores, plain.targets[0].window_scores,
                               atol=1e-5)
    assert fast.targets[0].best_window == plain.targets[0].best_window


def test_bf16_weights_stored_once_equal_autocast_over_fp32() -> None:
    reference = tiny_clip().eval()
    bf16 = ClipEncoder(copy.deepcopy(reference), CPU, torch.bfloat16)
    visual = bf16.model.visual
    assert visual.transformer.resblocks[0].mlp.c_fc.weight.dtype == torch.bfloat16
    assert visual.proj.dtype == bf16.model.text_projection.dtype == torch.bfloat16
    assert visual.ln_pre.weight.dtype == visual.conv1.weight.dtype == torch.float32
    assert bf16.input_dtype == torch.float32  # CLIP's residual stream stays fp32
    x = torch.randn(4, 3, 32, 32)
    texts = ["a photo of a red block.", "table"]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want_images = reference.encode_image(x).float()
        want_texts = reference.encode_text(import_clip().tokenize(texts)).float()
    torch.testing.assert_close(bf16.encode_normalized(x), want_images, rtol=0, atol=1e-5)
    torch.testing.assert_close(bf16.encode_texts(texts), want_texts, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_chunks_give_the_same_embeddings_as_one_batch(encoder) -> None:
    assert encoder.max_batch > 0  # the CPU default
    one_batch = ClipEncoder(tiny_clip(), CPU, torch.float32, max_batch=0)
    chunked = ClipEncoder(tiny_clip(), CPU, torch.float32, max_batch=4)
    x = torch.randn(10, 3, 32, 32)
    torch.testing.assert_close(chunked.encode_normalized(x), one_batch.encode_normalized(x),
                               rtol=1e-4, atol=1e-5)


def test_fp16_encoder_runs_and_matches_fp32(encoder) -> None:
    """The CUDA default precision, on the CPU: layer norms must stay fp32."""
    fp16 = ClipEncoder(tiny_clip(), CPU, torch.float16)
    images = torch.rand(3, 3, 32, 32)
    got = fp16.encode_images(images)
    assert got.dtype == torch.float32
    assert (F.cosine_similarity(got, encoder.encode_images(images)) > 0.99).all()
    texts = fp16.encode_texts(["a photo of a red block."])
    assert (F.cosine_similarity(texts, encoder.encode_texts(["a photo of a red block."]))
            > 0.99).all()


@pytest.mark.slow
def test_compiled_encoder_pads_to_static_shapes_and_matches_eager(encoder) -> None:
    compiled = ClipEncoder(tiny_clip(), CPU, torch.float32)
    compiled.compile(backend="eager", pad_to=4)
    tower, sizes = compiled._image_tower, []
    compiled._image_tower = lambda x: (sizes.append(x.shape[0]), tower(x))[1]
    x = torch.randn(6, 3, 32, 32)
    six, one = compiled.encode_normalized(x), compiled.encode_normalized(x[:1])
    assert sizes == [8, 1]  # 6 windows padded to 8; a single window as it is
    torch.testing.assert_close(six, encoder.encode_normalized(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(one, six[:1], rtol=1e-4, atol=1e-5)
    assert six.data_ptr() != compiled.encode_normalized(x).data_ptr()  # outputs are copies


FINAL_LINE = re.compile(r"speedup_vs_naive=\d+\.\d+ overhead_vs_model=\d+\.\d+ "
                        r"device=cpu windows=86")


@pytest.mark.slow
def test_benchmark_runs_end_to_end(capsys) -> None:
    code = benchmark.main(["--arch", "tiny", "--frames", "1", "--size", "64x48",
                           "--precision", "fp32", "--device", "cpu"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0, out
    assert FINAL_LINE.fullmatch(out[-1]), out[-1]
    assert "agreement: PASS" in out
    assert any(line.startswith("refined (") for line in out)


def test_ros_flag_calls_the_ros_benchmark(monkeypatch) -> None:
    calls = []
    module = types.SimpleNamespace(run_ros_benchmark=lambda args: calls.append(args) or 7)
    monkeypatch.setitem(sys.modules, "clip_perception.tools.ros_benchmark", module)
    assert benchmark.main(["--ros", "--frames", "3"]) == 7
    assert calls[0].frames == 3


def test_ros_flag_without_the_module_says_so(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "clip_perception.tools.ros_benchmark", None)
    assert benchmark.main(["--ros"]) == 2
    assert "clip_perception.tools.ros_benchmark" in capsys.readouterr().err
