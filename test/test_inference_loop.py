"""InferenceLoop with fake detectors: each test runs in milliseconds.

The fakes block on events rather than sleeping, so every interleaving a test
names (a frame in flight, a result waiting for the publisher) is forced.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from clip_perception.core.encoder import EncoderRequestError, EncoderUnavailableError
from clip_perception.core.runtime.health import ERROR, OK, WARN, Health
from clip_perception.core.runtime.inference_loop import InferenceLoop

WAIT = 2.0


class Boom(Exception):
    pass


class ThreadKiller(BaseException):
    """Not an Exception: escapes every guard, as a bug in the guard itself would."""


def until(predicate, timeout=WAIT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


class FakeDetector:
    """detect() returns every target present; frames named in ``fail`` raise; a closed
    ``gate`` holds detect() until opened; phrases in ``bad_phrases`` cannot be embedded."""

    def __init__(self, bad_phrases=(), fail=(), kill=(), down=(), refused=()):
        self.down, self.refused = set(down), set(refused)
        self.config = SimpleNamespace(refine=False, refine_stages=0, crop_budget=10)
        self.bad_phrases = set(bad_phrases)
        self.fail, self.kill = set(fail), set(kill)
        self.targets: tuple[str, ...] = ()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.seen: list = []

    def prepare(self, targets):
        bad = self.bad_phrases.intersection(targets)
        if bad:
            raise Boom(f"cannot embed {sorted(bad)}")

    def set_targets(self, targets):
        self.prepare(targets)
        self.targets = tuple(targets)

    def detect(self, frame, targets, with_heatmap=False):
        self.seen.append((frame, targets))
        self.entered.set()
        self.gate.wait(WAIT * 5)
        if frame in self.kill:
            raise ThreadKiller()
        if frame in self.fail:
            raise Boom(f"bad frame {frame}")
        if frame in self.down:
            raise EncoderUnavailableError("server 127.0.0.1:1 is down")
        if frame in self.refused:
            raise EncoderRequestError("server 127.0.0.1:1 failed: ValueError: bad shape")
        present = not str(frame).startswith("absent")
        return SimpleNamespace(
            frame=frame, windows=[], refined=True, present=present,
            targets=[SimpleNamespace(phrase=p, present=present, score=0.9) for p in targets])


class Harness:
    """A loop whose publish() records (frame, targets, changes) and can be held shut."""

    def __init__(self, detector=None, publish_raises=(), **kwargs):
        self.published: list = []
        self.problems: list[tuple[str, str]] = []
        self.publish_gate = threading.Event()
        self.publish_gate.set()
        self.publish_entered = threading.Event()
        self.publish_threads: set[str] = set()
        self.publish_raises = set(publish_raises)
        self.detector = detector or FakeDetector()
        kwargs.setdefault("poll", 0.01)
        self.loop = InferenceLoop(self._publish, report=lambda k, m: self.problems.append((k, m)),
                                  **kwargs)
        self.loop.load(self.detector)

    def _publish(self, result):
        self.publish_entered.set()
        self.publish_gate.wait(WAIT * 5)
        self.publish_threads.add(threading.current_thread().name)
        if result.detection.frame in self.publish_raises:
            raise Boom("publisher down")
        self.published.append((result.detection.frame, result.targets.phrases,
                               [(t.phrase, t.present) for t in result.changes]))

    def frames(self):
        return [f for f, _, _ in self.published]

    def run(self, frame):
        """Submit ``frame`` and wait until it is published."""
        self.loop.submit(None, frame)
        assert until(lambda: frame in self.frames()), (self.loop.counters(), self.problems)


@pytest.fixture
def h():
    harness = Harness()
    harness.loop.set_targets(("red block",))
    harness.loop.start()
    yield harness
    harness.detector.gate.set()
    harness.publish_gate.set()
    harness.loop.stop(1.0)


def test_results_are_published_on_the_publisher_thread_with_their_targets(h):
    h.run("f1")
    assert h.published == [("f1", ("red block",), [("red block", True)])]
    assert h.publish_threads == {"clip_perception_publisher"}
    counts = h.loop.counters()
    assert counts["frames_processed"] == 1 and counts["frames_submitted"] == 1


def test_only_the_newest_waiting_frame_is_processed(h):
    h.detector.gate.clear()
    h.loop.submit(None, "f1")
    assert h.detector.entered.wait(WAIT)
    for name in ("f2", "f3", "f4"):
        h.loop.submit(None, name)
    h.detector.gate.set()
    assert until(lambda: "f4" in h.frames())
    assert h.frames() == ["f1", "f4"] and h.loop.counters()["frames_dropped"] == 2


def test_no_frame_from_before_a_stop_is_processed_after_the_restart(h):
    """Finding 1: the slot was closed on stop but never cleared."""
    h.detector.gate.clear()
    h.loop.submit(None, "in flight")
    assert h.detector.entered.wait(WAIT)
    h.loop.submit(None, "waiting at stop")
    stopper = threading.Thread(target=h.loop.stop)
    stopper.start()
    time.sleep(0.02)
    h.detector.gate.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    h.loop.start()
    h.run("after restart")
    processed = [frame for frame, _ in h.detector.seen]
    assert "waiting at stop" not in processed, processed
    assert h.frames()[-1] == "after restart"
    assert h.frames().index("after restart") == len(h.frames()) - 1


def test_a_frame_submitted_while_stopped_is_ignored(h):
    h.loop.stop()
    h.loop.submit(None, "while stopped")
    h.loop.start()
    h.run("after")
    assert [f for f, _ in h.detector.seen] == ["after"]


def test_a_result_for_a_target_changed_during_inference_is_not_published(h):
    h.detector.gate.clear()
    h.loop.submit(None, "f1")
    assert h.detector.entered.wait(WAIT)
    assert h.loop.set_targets(("blue block",))
    h.detector.gate.set()
    assert until(lambda: h.loop.counters()["results_superseded"] == 1)
    h.run("f2")
    assert h.published == [("f2", ("blue block",), [("blue block", True)])]


def test_queued_results_for_an_old_target_are_not_published(h):
    """Finding 3: results waiting for the publisher were published after the change."""
    h.publish_gate.clear()
    h.loop.submit(None, "f1")
    assert h.publish_entered.wait(WAIT)       # f1 is being published
    for name in ("f2", "f3"):                 # these wait in the outbox
        h.loop.submit(None, name)
        assert until(lambda name=name: (name, ("red block",)) in h.detector.seen)
    assert until(lambda: h.loop._run.outbox.qsize() == 2)
    assert h.loop.set_targets(("blue block",))
    h.publish_gate.set()
    h.run("f4")
    assert h.frames() == ["f1", "f4"]
    assert h.loop.counters()["results_superseded"] == 2


def test_a_failed_target_update_is_visible_and_the_old_target_keeps_working():
    """Finding 2: the node's and detector's targets disagreed and nothing was published."""
    h = Harness(FakeDetector(bad_phrases={"poison"}), health=Health(window=10.0))
    h.loop.set_targets(("red block",))
    h.loop.start()
    try:
        assert h.loop.set_targets(("poison",)) is False
        assert h.loop.targets.phrases == ("red block",)
        assert h.detector.targets == ("red block",), "detector and loop disagree"
        assert h.loop.counters()["target_updates_failed"] == 1
        assert [k for k, _ in h.problems] == ["target"] and "poison" in h.problems[0][1]
        report = h.loop.health_report()
        assert report.level == WARN and "poison" in report.message
        h.run("f1")
        assert h.published[-1][1] == ("red block",)
        assert h.loop.set_targets(("blue block",))
        assert "target_error" not in h.loop.health_report().values
    finally:
        h.loop.stop(1.0)


def test_prepare_targets_checks_without_switching():
    h = Harness(FakeDetector(bad_phrases={"poison"}))
    h.loop.set_targets(("red block",))
    version = h.loop.targets.version
    assert "poison" in h.loop.prepare_targets(("poison",))
    assert h.loop.prepare_targets(("blue block",)) is None
    assert h.loop.targets.version == version and h.detector.targets == ("red block",)


def test_a_failing_frame_is_counted_and_the_next_one_is_processed():
    h = Harness(FakeDetector(fail={"bad"}))
    h.loop.set_targets(("red block",))
    h.loop.start()
    try:
        h.loop.submit(None, "bad")
        assert until(lambda: h.loop.counters()["frames_failed"] == 1)
        h.run("good")
        assert ("inference" in {k for k, _ in h.problems})
    finally:
        h.loop.stop(1.0)


@pytest.mark.parametrize("stage", ["want_heatmap", "config", "report", "publish"])
def test_an_exception_outside_detect_is_counted_and_the_loop_goes_on(stage):
    """Finding 5: an exception in the worker outside detect ended the thread silently."""
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 1:
            raise Boom("first call fails")
        return False

    detector = FakeDetector()
    kwargs = {}
    if stage == "want_heatmap":
        kwargs["want_heatmap"] = flaky
    elif stage == "config":
        detector.config = SimpleNamespace(refine=True, refine_stages=1, crop_budget=1)
        detector_refined = detector.detect

        def detect(frame, targets, with_heatmap=False):
            out = detector_refined(frame, targets, with_heatmap)
            out.windows = None if frame == "first" else []  # len(None) raises in the check
            out.refined = False
            return out
        detector.detect = detect
    h = Harness(detector, publish_raises={"first"} if stage == "publish" else (), **kwargs)
    if stage == "report":
        def report(kind, message):
            raise Boom("logger down")
        h.loop._report = report
    h.loop.set_targets(("red block",))
    h.loop.start()
    try:
        h.loop.submit(None, "first")
        key = "publish_failed" if stage == "publish" else "loop_errors"
        if stage != "report":
            assert until(lambda: h.loop.counters()[key] == 1), h.loop.counters()
        h.run("second")
        assert h.loop.health_report().values["worker"] == "alive"
    finally:
        h.loop.stop(1.0)


def test_a_worker_killed_anyway_is_reported_as_an_error():
    health = Health(window=10.0)
    h = Harness(FakeDetector(kill={"fatal"}), health=health)
    h.loop.set_targets(("red block",))
    h.loop.start()
    old_hook = threading.excepthook
    threading.excepthook = lambda args: None  # the dying thread's traceback is expected
    try:
        assert h.loop.health_report().level == OK
        h.loop.submit(None, "fatal")
        assert until(lambda: h.loop.health_report().level == ERROR)
        report = h.loop.health_report()
        assert "died" in report.message and report.values["worker"] == "dead"
    finally:
        threading.excepthook = old_hook
        h.loop.stop(0.5)


def test_a_stalled_worker_is_an_error():
    h = Harness(health=Health(window=10.0, stall_after=0.05))
    h.loop.set_targets(("red block",))
    h.loop.start()
    try:
        h.detector.gate.clear()
        h.loop.submit(None, "slow")
        assert h.detector.entered.wait(WAIT)
        assert until(lambda: h.loop.health_report().level == ERROR)
        assert "stalled" in h.loop.health_report().message
        h.detector.gate.set()
        assert until(lambda: h.loop.health_report().level != ERROR)
    finally:
        h.detector.gate.set()
        h.loop.stop(1.0)


def test_stop_waits_for_the_frame_in_flight_and_publishes_it(h):
    h.detector.gate.clear()
    h.loop.submit(None, "in flight")
    assert h.detector.entered.wait(WAIT)
    threading.Timer(0.05, h.detector.gate.set).start()
    assert h.loop.stop(WAIT) is True
    assert h.frames() == ["in flight"]


def test_a_slow_model_is_not_released_under_its_worker():
    """Finding 6: stop gave up after its timeout and cleanup released the detector
    under the running worker."""
    h = Harness()
    h.loop.set_targets(("red block",))
    h.loop.start()
    released = threading.Event()
    h.detector.gate.clear()
    h.loop.submit(None, "slow")
    assert h.detector.entered.wait(WAIT)
    assert h.loop.stop(timeout=0.05) is False
    assert h.loop.counters()["stop_timeouts"] == 1
    assert "stop" in {k for k, _ in h.problems}
    assert h.loop.release(after=released.set) is False, "released under a running worker"
    assert not released.is_set()
    h.detector.gate.set()
    assert released.wait(WAIT), "the model is released once the worker is out"
    assert until(lambda: h.loop.counters()["results_after_stop"] == 1)
    assert h.published == []
    # and a restart with a new model works
    h.loop.load(FakeDetector())
    h.loop.start()
    try:
        h.run("fresh")
    finally:
        h.loop.stop(1.0)


def test_a_deferred_release_runs_when_the_slow_worker_exits_after_a_restart():
    h = Harness()
    h.loop.set_targets(("red block",))
    h.loop.start()
    h.detector.gate.clear()
    h.loop.submit(None, "slow")
    assert h.detector.entered.wait(WAIT)
    assert h.loop.stop(timeout=0.05) is False
    released = threading.Event()
    assert h.loop.release(after=released.set) is False
    fresh = FakeDetector()
    h.loop.load(fresh)           # cleanup, configure, activate while the old one runs
    h.loop.start()
    try:
        h.detector.gate.set()    # the old model finishes its frame
        assert released.wait(WAIT)
        assert h.loop.detector is fresh
        h.run("on the new model")
        assert h.frames() == ["on the new model"]
    finally:
        h.loop.stop(1.0)


def test_release_runs_at_once_when_no_worker_is_busy(h):
    h.loop.stop()
    done = []
    assert h.loop.release(after=lambda: done.append(1)) is True and done == [1]
    assert h.loop.detector is None


def test_restart_after_stop_works_repeatedly(h):
    for i in range(5):
        h.run(f"cycle {i}")
        assert h.loop.stop(1.0)
        h.loop.start()
    h.run("last")
    names = {t.name for t in threading.enumerate()}
    assert sum(n == "clip_perception_worker" for n in names) <= 1


def test_found_state_is_tracked_per_target_version(h):
    """Finding 4: the found/lost state was reset on the executor thread while the
    publisher thread wrote to it; now it lives on the publisher thread, per version."""
    h.run("f1")
    h.run("absent f2")
    h.run("absent f3")
    assert [c for _, _, c in h.published] == [[("red block", True)], [("red block", False)], []]
    h.loop.set_targets(("red block",))  # the same phrase again: a new version starts over
    h.run("absent f4")
    assert h.published[-1][2] == [("red block", False)]


def test_frames_without_a_target_are_counted_not_published():
    h = Harness()
    h.loop.start()
    try:
        h.loop.submit(None, "f1")
        assert until(lambda: h.loop.counters()["frames_without_target"] == 1)
        assert h.published == []
    finally:
        h.loop.stop(1.0)


def test_errors_reach_the_health_window_and_leave_it():
    """Finding 7 at the loop: one bad frame is a WARN for one window, not forever."""
    now = [0.0]
    health = Health(window=1.0, clock=lambda: now[0])
    h = Harness(FakeDetector(fail={"bad"}), health=health)
    h.loop.set_targets(("red block",))
    h.loop.start()
    try:
        h.loop.submit(None, "bad")
        assert until(lambda: h.loop.counters()["frames_failed"] == 1)
        assert h.loop.health_report().level == WARN
        now[0] = 2.0
        h.run("good")
        assert h.loop.health_report().level == OK
    finally:
        h.loop.stop(1.0)


def test_an_unavailable_encoder_is_an_error_and_the_loop_recovers_by_itself():
    """A remote encoder that is down: ERROR in health, counted, then answers again."""
    now = [0.0]
    h = Harness(FakeDetector(down={"down"}), health=Health(window=1.0, clock=lambda: now[0]))
    h.loop.set_targets(("red block",))
    h.loop.start()
    try:
        h.loop.submit(None, "down")
        assert until(lambda: h.loop.counters()["frames_failed"] == 1)
        assert h.loop.health_report().level == ERROR
        assert "encoder_unavailable" in {k for k, _ in h.problems}
        now[0] = 2.0
        h.run("good")
        assert h.loop.health_report().level == OK
    finally:
        h.loop.stop(1.0)


def test_a_request_error_is_a_failed_frame_not_an_outage():
    """The encoder's server failed one frame (the model raised): counted apart from
    outages, reported with the server's message, WARN (not ERROR), next frame answered."""
    h = Harness(FakeDetector(refused={"refused"}))
    h.loop.set_targets(("red block",))
    h.loop.start()
    try:
        h.loop.submit(None, "refused")
        assert until(lambda: h.loop.counters()["remote_request_errors"] == 1)
        assert h.loop.counters()["frames_failed"] == 1
        report = h.loop.health_report()
        assert report.level == WARN and "encoder_request" in report.message
        assert [m for k, m in h.problems if k == "encoder_request"] == [
            "the encoder's server failed a frame, skipped: server 127.0.0.1:1 failed: "
            "ValueError: bad shape"]
        h.run("good")
    finally:
        h.loop.stop(1.0)


def test_the_loop_runs_the_real_detector_and_prepare_does_not_switch_targets():
    import numpy as np

    from clip_perception.core.detect.detector import Detector
    from clip_perception.testing.color_encoder import ColorEncoder
    from clip_perception.testing.scenes import make_scene

    detector = Detector(ColorEncoder(device="cpu"))
    published = []
    loop = InferenceLoop(published.append, poll=0.01)
    loop.load(detector)
    assert loop.set_targets(("red block",))
    loop.prepare_targets(("blue block",))
    assert detector.targets == ("red block",) and loop.targets.phrases == ("red block",)
    s = make_scene(np.random.default_rng(1), target_colour="red", distractors=1)
    loop.start()
    try:
        loop.submit("header", s.image)
        assert until(lambda: published, 10)
    finally:
        loop.stop(5)
    result = published[0]
    assert result.header == "header" and result.targets.phrases == ("red block",)
    assert result.detection.present and result.changes[0].phrase == "red block"


class ServerStarts:
    """make() for load_when_ready: unreachable until ``up`` is set."""

    def __init__(self, detector):
        self.up = threading.Event()
        self.calls = 0
        self.detector = detector

    def __call__(self):
        from clip_perception.core.encoder import ModelUnreachableError

        self.calls += 1
        if not self.up.is_set():
            raise ModelUnreachableError("no encoder at triton://127.0.0.1:1/clip")
        return self.detector


def test_a_model_whose_server_is_not_up_yet_is_loaded_once_it_answers():
    """Frames before that count as failed and health says ERROR; the targets set
    meanwhile are embedded when it loads; then results flow."""
    h = Harness()
    loop = InferenceLoop(h._publish, report=lambda k, m: h.problems.append((k, m)), poll=0.01)
    make = ServerStarts(FakeDetector())
    ready = []
    loop.load_when_ready(make, retry=0.01, on_ready=ready.append)
    loop.set_targets(("red block",))
    loop.start()
    try:
        assert until(lambda: make.calls >= 3)
        assert loop.loading and loop.detector is None
        report = loop.health_report()
        assert report.level == ERROR and "no model yet" in report.message
        assert "triton://127.0.0.1:1/clip" in report.values["model_error"]
        loop.submit(None, "early")
        assert until(lambda: loop.counters()["frames_failed"] == 1)
        assert ("model" in {k for k, _ in h.problems})
        make.up.set()
        assert until(lambda: ready == [make.detector])
        assert not loop.loading and loop.detector is make.detector
        assert make.detector.targets == ("red block",)
        loop.submit(None, "f1")
        assert until(lambda: "f1" in h.frames())
        assert loop.health_report().level != ERROR
    finally:
        loop.stop(1.0)


def test_release_stops_a_pending_model_load_for_good():
    h = Harness()
    loop = InferenceLoop(h._publish, report=lambda k, m: h.problems.append((k, m)), poll=0.01)
    make = ServerStarts(FakeDetector())
    loop.load_when_ready(make, retry=0.01)
    assert until(lambda: make.calls >= 2)
    assert loop.release() is True
    make.up.set()
    time.sleep(0.1)
    assert loop.detector is None and not loop.loading
    assert "no model yet" not in loop.health_report().message


def test_a_model_that_fails_otherwise_while_loading_is_reported_not_retried():
    h = Harness()
    loop = InferenceLoop(h._publish, report=lambda k, m: h.problems.append((k, m)), poll=0.01)
    calls = []

    def broken():
        calls.append(1)
        raise Boom("checkpoint is corrupt")

    loop.load_when_ready(broken, retry=0.01)
    assert until(lambda: not loop.loading)
    time.sleep(0.05)
    assert len(calls) == 1 and loop.detector is None
    assert any("not retrying" in m and "corrupt" in m for _, m in h.problems)
    assert loop.health_report().level == ERROR


def test_pending_frames_are_decoded_only_when_taken_and_rejects_are_dropped(h):
    """Newest frame only, decoding included: frames replaced while the worker is busy
    are never decoded; a frame whose decoding rejects it is not processed."""
    from clip_perception.core.runtime.inference_loop import PendingFrame

    decoded, rejected = [], []

    def pending(name, bad=False):
        def decode():
            decoded.append(name)
            if bad:
                raise ValueError(f"corrupt {name}")
            return name
        return PendingFrame(decode, (ValueError,), rejected.append)

    h.detector.gate.clear()
    h.loop.submit(None, "busy")
    assert h.detector.entered.wait(WAIT)
    for name in ("p1", "p2", "p3"):
        h.loop.submit(None, pending(name))
    h.detector.gate.set()
    assert until(lambda: "p3" in h.frames())
    assert decoded == ["p3"], decoded  # p1 and p2 were replaced before anyone took them
    h.loop.submit(None, pending("bad", bad=True))
    assert until(lambda: len(rejected) == 1)
    h.run("after")
    assert "bad" not in h.frames() and h.loop.counters()["frames_failed"] == 0


@pytest.mark.parametrize("failure", ["unreachable", "broken"])
def test_a_loader_cancelled_inside_make_leaves_no_error_behind(failure):
    """Cleanup cancels the background loader while make() runs; make() then fails.
    The next configure loads the model directly: /diagnostics must not say
    "no model yet" while results flow."""
    from clip_perception.core.encoder import ModelUnreachableError

    h = Harness()
    loop = InferenceLoop(h._publish, report=lambda k, m: h.problems.append((k, m)), poll=0.01)
    inside, leave = threading.Event(), threading.Event()

    def make():
        inside.set()
        leave.wait(WAIT)
        if failure == "unreachable":
            raise ModelUnreachableError("no encoder at triton://127.0.0.1:1/clip")
        raise Boom("checkpoint is corrupt")

    loop.load_when_ready(make, retry=0.01)
    assert inside.wait(WAIT)
    loop.release()          # cleanup, while make() is running
    leave.set()
    assert until(lambda: not any(t.name == "clip_perception_model_loader"
                                 for t in threading.enumerate()))
    assert loop.load(FakeDetector())  # the next configure: the model loads directly
    loop.set_targets(("red block",))
    loop.start()
    try:
        loop.submit(None, "f1")
        assert until(lambda: "f1" in h.frames())
        report = loop.health_report()
        assert report.level == OK, report.message
    finally:
        loop.stop(1.0)


def test_a_successful_load_clears_an_earlier_model_error():
    h = Harness()
    loop = InferenceLoop(h._publish, report=lambda k, m: h.problems.append((k, m)), poll=0.01)
    loop.health.model_error = "no encoder at triton://127.0.0.1:1/clip"
    assert loop.load(FakeDetector())
    assert "no model yet" not in loop.health_report().message


def test_hybrid_mode_gives_no_crop_budget_warning():
    """Hybrid frames have no coarse-grid refine pass: the budget advice is for crop mode."""
    import numpy as np

    from clip_perception.core.detect.config import DetectorConfig
    from clip_perception.core.detect.detector import Detector
    from clip_perception.testing.color_encoder import ColorEncoder
    from clip_perception.testing.scenes import make_scene

    detector = Detector(ColorEncoder(device="cpu"), DetectorConfig(mode="hybrid"))
    assert detector.hybrid and detector.config.refine
    published, problems = [], []
    loop = InferenceLoop(published.append, report=lambda k, m: problems.append((k, m)),
                         poll=0.01)
    loop.load(detector)
    loop.set_targets(("red block",))
    loop.start()
    try:
        s = make_scene(np.random.default_rng(1), target_colour="red", distractors=1)
        loop.submit(None, s.image)
        assert until(lambda: published, 10)
    finally:
        loop.stop(5)
    assert not [m for k, m in problems if k == "budget"], problems


def test_a_target_is_retried_while_its_encoder_is_unavailable_and_refused_when_told_to_stop():
    """A frozen or down text server is not the target's fault: the new target is tried
    again (the old one in force meanwhile) until it embeds or the caller gives up."""
    class Flaky(FakeDetector):
        def __init__(self, outages):
            super().__init__()
            self.outages = outages

        def set_targets(self, targets):
            if self.outages > 0:
                self.outages -= 1
                raise EncoderUnavailableError("text server 127.0.0.1:1 did not answer")
            super().set_targets(targets)

    h = Harness(Flaky(outages=0))
    h.loop.set_targets(("red block",))
    h.detector.outages = 3
    assert h.loop.set_targets(("blue block",), retry_while=lambda: True, retry=0.01)
    assert h.loop.targets.phrases == ("blue block",)
    assert h.loop.counters()["target_updates_failed"] == 0
    assert [k for k, _ in h.problems] == ["target_unavailable"] * 3
    h.detector.outages = 100
    asked = []
    assert not h.loop.set_targets(("green block",), retry_while=lambda: asked.append(1) or
                                  len(asked) < 3, retry=0.01)
    assert h.loop.targets.phrases == ("blue block",)
    assert h.loop.counters()["target_updates_failed"] == 0, "given up, not refused"


def test_a_result_computed_with_settings_changed_meanwhile_is_not_published(h):
    """Settings apply off the executor: a frame in flight when they change is discarded,
    so no result of the old settings appears after the change."""
    h.detector.gate.clear()
    h.loop.submit(None, "old")
    assert h.detector.entered.wait(WAIT)
    h.loop.configure(lambda detector: None)
    h.detector.gate.set()
    assert until(lambda: h.loop.counters()["results_superseded"] == 1)
    h.run("new")
    assert h.frames() == ["new"]
