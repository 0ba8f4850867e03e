"""Detector.detect_batch: several frames, one encoder pass per stage, same answers as detect."""

from __future__ import annotations

import numpy as np
import pytest

from clip_perception.core.detect.config import DetectorConfig
from clip_perception.core.detect.detector import Detector
from clip_perception.testing import known_answer
from clip_perception.testing.scenes import make_scene

ENCODERS = ("linear", "concave", "noisy", "clip_like")


class CountingEncoder:
    """Wraps an encoder and counts image passes (and the crops in each)."""

    def __init__(self, inner):
        self.inner = inner
        self.input_size = inner.input_size
        self.device = inner.device
        self.logit_scale = inner.logit_scale
        self.batches: list[int] = []

    def encode_images(self, images):
        self.batches.append(int(images.shape[0]))
        return self.inner.encode_images(images)

    def encode_texts(self, texts):
        return self.inner.encode_texts(texts)


def scenes(seed: int, count: int = 3):
    rng = np.random.default_rng(seed)
    return [make_scene(rng, 320, 240, target_colour="red", present=i != 1, distractors=2)
            for i in range(count)]


def same(a, b) -> None:
    assert len(a.targets) == len(b.targets)
    assert a.crops == b.crops and a.refined == b.refined
    for x, y in zip(a.targets, b.targets):
        assert x.present == y.present
        assert x.box == y.box and x.best_window == y.best_window
        assert x.score == pytest.approx(y.score, abs=1e-5)
        np.testing.assert_allclose(x.window_scores, y.window_scores, atol=1e-5)
    for h, k in zip(a.heatmaps, b.heatmaps):
        np.testing.assert_allclose(h, k, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("seed", (0, 1))
def test_batch_equals_per_frame(name: str, seed: int) -> None:
    detector = Detector(known_answer.load(name), DetectorConfig(refine_stages=2))
    frames = [s.image for s in scenes(seed)]
    batch = detector.detect_batch(frames, targets=("red block",), with_heatmap=True)
    for frame, result in zip(frames, batch):
        same(result, detector.detect(frame, targets=("red block",), with_heatmap=True))


@pytest.mark.slow
@pytest.mark.parametrize("name", ("linear", "clip_like"))
def test_one_encoder_pass_per_stage(name: str) -> None:
    encoder = CountingEncoder(known_answer.load(name))
    detector = Detector(encoder, DetectorConfig(refine_stages=2))
    frames = [s.image for s in scenes(3)]
    single = detector.detect(frames[0], targets=("red block",))
    passes_per_frame = len(encoder.batches)
    assert passes_per_frame >= 2  # coarse + at least one refine stage, else nothing is tested
    encoder.batches.clear()
    results = detector.detect_batch(frames, targets=("red block",))
    assert len(encoder.batches) == passes_per_frame  # not 3x: frames share each pass
    assert sum(encoder.batches) == sum(r.crops for r in results)
    assert encoder.batches[0] == 3 * len(single.windows)


@pytest.mark.slow
def test_frames_of_different_sizes_and_empty_batch() -> None:
    detector = Detector(known_answer.load("linear"))
    rng = np.random.default_rng(5)
    small = make_scene(rng, 256, 192, target_colour="red", distractors=1)
    large = make_scene(rng, 400, 300, target_colour="red", distractors=1)
    batch = detector.detect_batch([small.image, large.image], targets=("red block",))
    same(batch[0], detector.detect(small.image, targets=("red block",)))
    same(batch[1], detector.detect(large.image, targets=("red block",)))
    assert detector.detect_batch([], targets=("red block",)) == []


@pytest.mark.slow
def test_no_targets_and_hybrid_run_per_frame() -> None:
    detector = Detector(known_answer.load("linear"), DetectorConfig(mode="hybrid"))
    frames = [s.image for s in scenes(7, 2)]
    assert [len(d.targets) for d in detector.detect_batch(frames, targets=())] == [0, 0]
    batch = detector.detect_batch(frames, targets=("red block",))
    for frame, result in zip(frames, batch):
        same(result, detector.detect(frame, targets=("red block",)))


class RemoteLike:
    """An encoder with encode_windows (as triton:// has): gets the Frame and boxes,
    crops where it runs; counts its calls."""

    def __init__(self, inner):
        from clip_perception.core.detect.crops import FrameUploader

        self.inner, self.calls = inner, 0
        self.input_size, self.device = inner.input_size, inner.device
        self.logit_scale = inner.logit_scale
        self._upload = FrameUploader(inner.device)

    def encode_windows(self, frame, boxes):
        from clip_perception.core.detect.crops import crop_windows

        self.calls += 1
        return self.inner.encode_images(crop_windows(self._upload(frame), boxes,
                                                     self.input_size))

    def encode_texts(self, texts):
        return self.inner.encode_texts(texts)


@pytest.mark.slow
def test_a_remote_encoder_gets_one_request_per_frame_and_stage() -> None:
    encoder = RemoteLike(known_answer.load("concave"))
    detector = Detector(encoder, DetectorConfig(refine_stages=2))
    frames = [s.image for s in scenes(9)]
    singles = [detector.detect(f, targets=("red block",)) for f in frames]
    per_frame = encoder.calls // len(frames)
    encoder.calls = 0
    batch = detector.detect_batch(frames, targets=("red block",))
    assert encoder.calls == per_frame * len(frames)
    for one, got in zip(singles, batch):
        same(got, one)
