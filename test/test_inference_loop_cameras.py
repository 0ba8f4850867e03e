"""InferenceLoop with several cameras: per-camera newest-frame slots, round-robin
batches, per-camera change tracking and figures. Fake detectors, milliseconds each."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
from test_inference_loop import WAIT, until

from clip_perception.core.detect.config import DetectorConfig
from clip_perception.core.detect.detector import Detector
from clip_perception.core.runtime.camera_slots import CameraSlots
from clip_perception.core.runtime.inference_loop import InferenceLoop
from clip_perception.testing import known_answer
from clip_perception.testing.scenes import make_scene


class BatchDetector:
    """Records each batch; ``gate`` holds a call; frames starting "absent" are not found."""

    config = SimpleNamespace(refine=False, refine_stages=0, crop_budget=10)

    def __init__(self):
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def set_targets(self, targets):
        pass

    def prepare(self, targets):
        pass

    def _one(self, frame, targets):
        present = not str(frame).startswith("absent")
        return SimpleNamespace(frame=frame, windows=[], refined=True, present=present,
                               targets=[SimpleNamespace(phrase=p, present=present)
                                        for p in targets])

    def detect(self, frame, targets, with_heatmap=False):
        return self.detect_batch([frame], targets, with_heatmap)[0]

    def detect_batch(self, frames, targets, with_heatmap=False):
        self.batches.append(list(frames))
        self.entered.set()
        self.gate.wait(WAIT * 5)
        if any(str(f).startswith("bad") for f in frames):
            raise ValueError("bad frame in batch")
        return [self._one(f, targets) for f in frames]


class Cams:
    def __init__(self, cameras=("a", "b"), **kwargs):
        self.published: list = []
        self.problems: list = []
        self.detector = BatchDetector()
        self.loop = InferenceLoop(self._publish, report=lambda k, m: self.problems.append(m),
                                  cameras=cameras, poll=0.01, **kwargs)
        self.loop.load(self.detector)
        self.loop.set_targets(("red block",))
        self.loop.start()

    def _publish(self, result):
        self.published.append((result.camera, result.detection.frame, result.header,
                               [(t.phrase, t.present) for t in result.changes]))

    def frames(self, camera):
        return [f for c, f, _, _ in self.published if c == camera]

    def hold(self):
        """Block the worker inside a batch so frames pile up in the slots."""
        self.detector.gate.clear()
        self.detector.entered.clear()
        self.loop.submit("h", "hold", camera=self.loop.cameras[0])
        assert self.detector.entered.wait(WAIT)


@pytest.fixture
def cams():
    made = []

    def make(**kwargs):
        made.append(Cams(**kwargs))
        return made[-1]
    yield make
    for c in made:
        c.detector.gate.set()
        c.loop.stop(1.0)


def test_waiting_frames_of_all_cameras_run_as_one_batch_newest_only(cams):
    c = cams(cameras=("a", "b", "c"))
    c.hold()
    for frame in ("a1", "a2"):
        c.loop.submit("ha", frame, camera="a")
    for frame in ("b1", "b2", "b3"):
        c.loop.submit("hb", frame, camera="b")
    c.detector.gate.set()
    assert until(lambda: "b3" in c.frames("b") and "a2" in c.frames("a"))
    assert sorted(c.detector.batches[1]) == ["a2", "b3"]  # c had nothing waiting
    figures = c.loop.camera_figures()
    assert figures["a"]["frames_dropped"] == 1 and figures["b"]["frames_dropped"] == 2
    assert figures["c"]["frames_dropped"] == 0 and figures["c"]["frames_submitted"] == 0
    assert figures["b"]["frames_processed"] == 1
    assert c.loop.counters()["frames_dropped"] == 3
    assert {(cam, f, h) for cam, f, h, _ in c.published} >= {("a", "a2", "ha"),
                                                              ("b", "b3", "hb")}


def test_round_robin_with_a_batch_smaller_than_the_cameras():
    slots = CameraSlots(("a", "b", "c"))
    served = []
    for _ in range(6):  # every camera always has a frame waiting
        for camera in slots.cameras:
            slots.put(camera, camera)
        served.append([camera for camera, _ in slots.take(1, 0)])
    assert served == [["a"], ["b"], ["c"], ["a"], ["b"], ["c"]]
    assert slots.clear() == 2 and slots.dropped == {"a": 4, "b": 4, "c": 4}
    for camera in ("a", "c"):
        slots.put(camera, camera)
    assert [c for c, _ in slots.take(2, 0)] == ["a", "c"]
    slots.put("a", "a")
    slots.put("c", "c")
    assert [c for c, _ in slots.take(1, 0)] == ["c"]  # after a, served first last time


def test_a_fast_camera_is_not_starved_by_a_busy_one(cams):
    c = cams(max_batch=1)
    stop = threading.Event()

    def flood():  # camera a submits as fast as it can
        i = 0
        while not stop.is_set():
            c.loop.submit(None, f"a{i}", camera="a")
            i += 1

    thread = threading.Thread(target=flood)
    thread.start()
    try:
        for i in range(5):
            c.loop.submit(None, f"b{i}", camera="b")
            assert until(lambda i=i: f"b{i}" in c.frames("b")), c.loop.camera_figures()
    finally:
        stop.set()
        thread.join()
    assert all(len(batch) == 1 for batch in c.detector.batches)
    assert c.frames("a")  # and a was served too


def test_changes_are_tracked_per_camera(cams):
    c = cams()
    for camera, frame in (("a", "a1"), ("b", "absent_b1"), ("a", "a2"), ("b", "b2"),
                          ("a", "absent_a3")):
        c.loop.submit(None, frame, camera=camera)
        assert until(lambda frame=frame, camera=camera: frame in c.frames(camera))
    changes = {f: ch for _, f, _, ch in c.published}
    assert changes["a1"] == [("red block", True)]
    assert changes["absent_b1"] == [("red block", False)]  # b's first result reports
    assert changes["a2"] == []
    assert changes["b2"] == [("red block", True)]
    assert changes["absent_a3"] == [("red block", False)]


def test_a_failing_batch_costs_only_the_bad_frame(cams):
    c = cams()
    c.hold()
    c.loop.submit(None, "bad_a", camera="a")
    c.loop.submit(None, "b1", camera="b")
    c.detector.gate.set()
    assert until(lambda: "b1" in c.frames("b"))
    figures = c.loop.camera_figures()
    assert figures["a"]["frames_failed"] == 1 and figures["b"]["frames_failed"] == 0
    assert any("camera 'a'" in m for m in c.problems)


def test_unknown_camera_and_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        InferenceLoop(lambda r: None, cameras=("a", "a"))
    loop = InferenceLoop(lambda r: None, cameras=("a", "b"))
    with pytest.raises(KeyError, match="unknown camera"):
        loop.submit(None, "x", camera="c")


def test_rate_is_measured_per_camera(cams):
    c = cams()
    for i in range(4):
        c.loop.submit(None, f"a{i}", camera="a")
        assert until(lambda i=i: f"a{i}" in c.frames("a"))
    figures = c.loop.camera_figures()
    assert figures["a"]["rate_hz"] == pytest.approx(4 / 10.0)
    assert figures["b"]["rate_hz"] == 0.0


class CountingEncoder:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.input_size, self.device = inner.input_size, inner.device
        self.logit_scale = inner.logit_scale

    def encode_images(self, images):
        self.calls += 1
        return self.inner.encode_images(images)

    def encode_texts(self, texts):
        return self.inner.encode_texts(texts)


@pytest.mark.slow
@pytest.mark.parametrize("name", ("linear", "high_background", "clip_like"))
def test_a_real_detector_batches_cameras_and_matches_single_frames(name):
    """Two cameras' frames waiting together: one encoder pass per stage, and the
    published results equal detect() on each frame alone."""
    encoder = CountingEncoder(known_answer.load(name))
    detector = Detector(encoder, DetectorConfig(refine_stages=2))
    rng = np.random.default_rng(11)
    scenes = {"a": make_scene(rng, 320, 240, present=True, distractors=2),
              "b": make_scene(rng, 320, 240, present=False, distractors=2)}
    expected = {cam: detector.detect(s.image, targets=("red block",))
                for cam, s in scenes.items()}
    per_frame = encoder.calls // 2
    published = {}
    gate = threading.Event()

    def publish(result):
        published[result.camera] = result.detection

    loop = InferenceLoop(publish, cameras=("a", "b"), poll=0.01)
    loop.load(detector)
    loop.set_targets(("red block",))
    original = detector.detect_batch

    def held(frames, **kwargs):
        gate.wait(WAIT)
        return original(frames, **kwargs)

    detector.detect_batch = held
    loop.start()
    try:
        for cam, scene in scenes.items():  # both wait before the worker looks
            loop.submit(None, scene.image, camera=cam)
        encoder.calls = 0
        gate.set()
        assert until(lambda: len(published) == 2, WAIT * 5)
    finally:
        loop.stop(5.0)
    assert encoder.calls == per_frame  # one pass per stage for both frames
    for cam in scenes:
        got, want = published[cam], expected[cam]
        assert [t.present for t in got.targets] == [t.present for t in want.targets]
        assert [t.box for t in got.targets] == [t.box for t in want.targets]
    assert published["a"].targets[0].present and not published["b"].targets[0].present
