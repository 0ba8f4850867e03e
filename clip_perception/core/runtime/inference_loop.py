"""The node's concurrency, without ROS: newest-frame slot, worker, publisher hand-off.

:class:`InferenceLoop` owns everything between "a frame arrived" and "publish
this result":

* one newest-frame slot per camera (:class:`~.camera_slots.CameraSlots`): a
  frame arriving while another is processed replaces the waiting one of the
  same camera (counted as dropped); the slots are cleared on
  :meth:`~InferenceLoop.start` and :meth:`~InferenceLoop.stop`, so no frame
  from before a stop is processed after it;
* a worker thread running the detector on the newest frames (a compressed
  frame arrives as a :class:`PendingFrame` and is decoded
  here, so frames replaced in the slot are never decoded): every camera's
  waiting frame, round-robin, up to ``max_batch``, as one batched detection
  (``detector.detect_batch``: one encoder pass per stage); one frame alone
  goes through ``detector.detect``;
* a publisher thread calling ``publish(result)`` while the worker starts on
  the next frame (at most ``outbox_size`` results wait between them);
* the targets (shared by all cameras), versioned: each job runs with one version and its result is
  published only while that version is still current (otherwise it is
  counted as superseded), checked again on the publisher thread;
* a model whose server is not up yet (:meth:`~InferenceLoop.load_when_ready`):
  retried on a thread of its own, health ERROR and frames counted as failed
  until it loads;
* health (:mod:`.health`, one for the loop) and counters, also per camera
  (:meth:`~InferenceLoop.camera_figures`); found/not-found changes are
  tracked per camera;
* a tracking stage, when given (``tracking``, e.g.
  :class:`~clip_perception.core.track.tracking_stage.TrackingStage`): its
  ``observe(job, detection, detector, phrases)`` runs on the worker thread
  after each detection (stamp order per camera) and its answer rides on the
  :class:`Result` as ``tracks``; with ``tracking.propagating`` every submitted
  frame also goes to a newest-frame slot of its own, and a propagation thread
  publishes ``tracking.propagate(job)``'s answers as results whose ``source``
  is ``"propagated"`` (found/not-found changes ignore them).

Every worker and publisher iteration is guarded: an exception is counted,
reported through ``report(kind, message)``, and the loop goes on. A failed
target update is reported and the old target stays in force.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..encoder import EncoderRequestError, EncoderUnavailableError, ModelUnreachableError
from .camera_slots import CameraSlots
from .health import Health, HealthReport
from .timings import Timings

CAMERA_COUNTERS = ("frames_submitted", "frames_processed", "frames_failed")
COUNTERS = ("frames_submitted", "frames_processed", "frames_without_target", "frames_failed",
            "results_superseded", "results_after_stop", "publish_failed", "loop_errors",
            "target_updates", "target_updates_failed", "stop_timeouts", "frames_cleared",
            "remote_request_errors", "frames_propagated", "propagated_dropped")

_log = logging.getLogger(__name__)


class PendingFrame:
    """A frame decoded when the worker takes it, not when it arrives.

    A compressed camera at 30 Hz delivers far more frames than a CLIP pipeline
    processes; the rest are replaced in the newest-frame slot. Decoding each one
    on arrival would spend the executor's time on frames nobody looks at, so the
    input submits a :class:`PendingFrame` and the worker decodes only the frames
    it takes (``decode()`` runs on the worker thread).

    Args:
        decode: makes the frame (e.g. decodes a jpeg); may raise ``errors``.
        errors: the exceptions that mean "a bad input": ``rejected(exc)`` is
            called with them (count, log) and :meth:`resolve` returns None.
            Anything else propagates (a bug, counted by the loop).
        rejected: called on the worker thread with a bad input's exception.
    """

    __slots__ = ("_decode", "_errors", "_rejected")

    def __init__(self, decode: Callable[[], Any], errors: tuple[type[BaseException], ...],
                 rejected: Callable[[BaseException], None]):
        self._decode = decode
        self._errors = errors
        self._rejected = rejected

    def resolve(self) -> Any | None:
        """The decoded frame, or None for a bad input (already reported by ``rejected``)."""
        try:
            return self._decode()
        except self._errors as exc:
            self._rejected(exc)
            return None


def resolve(frame: Any) -> Any | None:
    """``frame`` itself, or a :class:`PendingFrame`'s decoded frame (None if rejected)."""
    return frame.resolve() if isinstance(frame, PendingFrame) else frame


@dataclass(frozen=True)
class Targets:
    """The phrases to find and their version (bumped by every accepted change)."""

    version: int
    phrases: tuple[str, ...]


@dataclass(frozen=True)
class Job:
    """One submitted frame: an opaque header (the node's), the frame, its receive time
    and its camera."""

    header: Any
    frame: Any
    received: float
    camera: str = ""


@dataclass
class Result:
    """A detection ready to publish, with what it was computed from.

    ``changes`` holds the targets whose found/not-found state changed since the
    previous published result of the same target version (the first result of
    a version reports every target).
    """

    header: Any
    frame: Any
    detection: Any
    targets: Targets
    with_heatmap: bool
    received: float
    changes: list = field(default_factory=list)
    camera: str = ""
    tracks: Any = None          # the tracking stage's answer for this frame, if any
    source: str = "inference"   # or "propagated" (boxes carried by the tracking stage)


class _Run:
    """The threads and hand-off queue of one start..stop."""

    def __init__(self, outbox_size: int):
        self.stop = threading.Event()
        self.abandoned = threading.Event()  # stop gave up waiting: discard what comes later
        self.outbox: queue.Queue = queue.Queue(maxsize=outbox_size)
        self.busy_since: float | None = None
        self.found: dict[str, dict[str, bool]] = {}  # per camera; publisher thread only
        self.found_version = -1
        self.worker: threading.Thread | None = None
        self.publisher: threading.Thread | None = None
        self.propagator: threading.Thread | None = None
        self.taken: tuple = ()  # the jobs the worker took last (not propagated then)
        self.inferred: dict[str, float] = {}  # camera -> stamp of its newest published inference


class InferenceLoop:
    """Runs ``detector.detect`` on the newest frame and hands results to ``publish``.

    Args:
        publish: called on the publisher thread with each :class:`Result`.
        report: ``report(kind, message)`` for every problem (e.g. a throttled log).
        want_heatmap: asked before each job whether to compute heatmaps.
        health: windowed health; a 10 s window by default.
        stop_timeout: how long :meth:`stop` waits for the job in flight.
        clock: monotonic seconds (receive times, wait timings).
        cameras: the camera names (``("",)``: one unnamed camera); frames are
            submitted with their camera's name.
        max_batch: frames detected together at most (default: one per camera).
        rate_window: seconds over which :meth:`camera_figures` measures ``rate_hz``.
        tracking: a tracking stage (see the module docstring), or None.
    """

    def __init__(self, publish: Callable[[Result], None], *,
                 report: Callable[[str, str], None] | None = None,
                 want_heatmap: Callable[[], bool] = lambda: False,
                 health: Health | None = None, stop_timeout: float = 30.0,
                 outbox_size: int = 2, poll: float = 0.2,
                 clock: Callable[[], float] = time.perf_counter,
                 cameras: Sequence[str] = ("",), max_batch: int | None = None,
                 rate_window: float = 10.0, tracking: Any = None):
        self._publish = publish
        self._report = report or (lambda kind, message: _log.warning(message))
        self._want_heatmap = want_heatmap
        self.health = health or Health()
        self.stop_timeout = stop_timeout
        self._outbox_size = outbox_size
        self._poll = poll
        self._clock = clock
        self.timings = Timings()
        self._lock = threading.Lock()          # counts, targets, detector, run
        self._update_lock = threading.Lock()   # one target/detector change at a time
        self._counts: Counter[str] = Counter({k: 0 for k in COUNTERS})
        self.cameras = tuple(cameras)
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"duplicate camera names in {list(self.cameras)}")
        self.max_batch = max(1, int(max_batch or len(self.cameras)))
        self._rate_window = rate_window
        self._slot: CameraSlots[Job] = CameraSlots(self.cameras)
        self.tracking = tracking
        self._flow_slot: CameraSlots[Job] = CameraSlots(self.cameras)
        self._camera_counts: dict[str, Counter[str]] = {
            c: Counter(dict.fromkeys(CAMERA_COUNTERS, 0)) for c in self.cameras}
        self._camera_cleared: Counter[str] = Counter()
        self._result_times: dict[str, deque[float]] = {c: deque() for c in self.cameras}
        self._targets = Targets(0, ())
        self._detector = None
        self._run: _Run | None = None
        self._after_release: list[Callable[[], None]] = []
        self._loader: tuple[threading.Thread, threading.Event] | None = None
        self._zombies: list[_Run] = []  # runs whose worker outlived stop()

    # --- state ----------------------------------------------------------------------
    @property
    def targets(self) -> Targets:
        return self._targets

    @property
    def detector(self):
        return self._detector

    @property
    def running(self) -> bool:
        return self._run is not None

    def counters(self) -> dict[str, int]:
        """Every counter, ``frames_dropped`` (replaced or cleared frames) included."""
        with self._lock:
            counts = dict(self._counts)
        counts["frames_dropped"] = sum(self._slot.dropped.values()) + counts.pop("frames_cleared")
        return counts

    def camera_figures(self) -> dict[str, dict[str, float]]:
        """Per camera: ``frames_submitted``, ``frames_processed``, ``frames_failed``,
        ``frames_dropped`` and ``rate_hz`` (results published over the last
        ``rate_window`` seconds)."""
        now = self._clock()
        figures = {}
        with self._lock:
            for camera in self.cameras:
                row: dict[str, float] = dict(self._camera_counts[camera])
                row["frames_dropped"] = (self._slot.dropped[camera]
                                         + self._camera_cleared[camera])
                times = self._result_times[camera]
                while times and times[0] < now - self._rate_window:
                    times.popleft()
                row["rate_hz"] = round(len(times) / self._rate_window, 2)
                figures[camera] = row
        return figures

    def _count(self, key: str, n: int = 1, camera: str | None = None) -> None:
        with self._lock:
            self._counts[key] += n
            if camera is not None:
                if key == "frames_cleared":
                    self._camera_cleared[camera] += n
                elif key in CAMERA_COUNTERS:
                    self._camera_counts[camera][key] += n

    def _problem(self, kind: str, message: str) -> None:
        """Count an error in the health window and report it; never raises."""
        self.health.error(kind)
        try:
            self._report(kind, message)
        except Exception:  # a broken logger must not take the loop down
            _log.exception("report failed")

    def record_error(self, kind: str) -> None:
        """An input problem seen by the caller (e.g. a malformed image): counts in health."""
        self.health.error(kind)

    def health_report(self) -> HealthReport:
        run = self._run
        alive = run is not None and all(
            t is not None and t.is_alive() for t in (run.worker, run.publisher))
        since = None if run is None else run.busy_since
        return self.health.report(running=run is not None, worker_alive=alive,
                                  busy_for=None if since is None else self._clock() - since,
                                  has_target=bool(self._targets.phrases))

    # --- the detector ---------------------------------------------------------------
    def load(self, detector) -> bool:
        """Use ``detector`` from now on and embed the current targets with it.

        Returns False (reported; the targets stay) if they cannot be embedded.
        """
        with self._update_lock:
            return self._load_locked(detector)

    def _load_locked(self, detector) -> bool:
        with self._lock:
            self._detector = detector
        self.health.model_error = None  # whatever an earlier attempt said, a model is here
        phrases = self._targets.phrases
        try:
            detector.set_targets(phrases)
        except Exception as exc:
            self._target_failed(phrases, exc)
            return False
        return True

    def load_when_ready(self, make: Callable[[], Any], *, retry: float = 1.0,
                        on_ready: Callable[[Any], None] | None = None) -> None:
        """Build the detector with ``make()`` on a thread of its own, then :meth:`load` it.

        For a model whose server is not up yet: while ``make`` raises
        :class:`~..encoder.ModelUnreachableError`, each attempt is reported, health
        says ERROR ("no model yet"), submitted frames count as failed, and it tries
        again ``retry`` s later. Any other error is reported and ends the attempts
        (health stays ERROR). ``on_ready(detector)`` runs once it is loaded.
        :meth:`release` cancels the attempts.
        """
        self._cancel_loader()
        cancel = threading.Event()

        def failed(message: str, error: str) -> bool:
            """Report a failed attempt unless cancelled meanwhile; True if reported."""
            with self._update_lock:  # _cancel_loader sets cancel under this lock
                if cancel.is_set():
                    return False  # cleaned up while make() ran: nothing of ours is current
                self.health.model_error = error
            self._problem("model", message)
            return True

        def attempts() -> None:
            while not cancel.is_set():
                try:
                    detector = make()
                except ModelUnreachableError as exc:
                    if not failed(f"model not loaded yet (retrying every {retry:g} s): {exc}",
                                  str(exc)):
                        return
                    cancel.wait(retry)
                    continue
                except Exception as exc:  # a broken model: say so, stop trying
                    failed(f"the model could not be loaded; not retrying: {exc}", f"{exc}")
                    return
                with self._update_lock:  # release() cancels under this lock: no stale load
                    if cancel.is_set():
                        return
                    self._load_locked(detector)
                if on_ready is not None:
                    try:
                        on_ready(detector)
                    except Exception:  # a broken callback must not undo the load
                        _log.exception("on_ready failed")
                return

        thread = threading.Thread(target=attempts, name="clip_perception_model_loader",
                                  daemon=True)
        self._loader = (thread, cancel)
        thread.start()

    @property
    def loading(self) -> bool:
        """True while :meth:`load_when_ready` is still trying."""
        loader = self._loader
        return loader is not None and loader[0].is_alive() and not loader[1].is_set()

    def _cancel_loader(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            with self._update_lock:
                loader[1].set()
                self.health.model_error = None

    def release(self, after: Callable[[], None] | None = None) -> bool:
        """Drop the detector (and stop a :meth:`load_when_ready` still trying). ``after``
        (e.g. freeing caches) runs once no worker can use it: now, or when a worker
        that outlived :meth:`stop` exits. True if now."""
        self._cancel_loader()
        with self._lock:
            self._detector = None
            busy = [r for r in self._zombies if r.worker is not None and r.worker.is_alive()]
            if self._run is not None or busy:
                if after is not None:
                    self._after_release.append(after)
                return False
        if after is not None:
            after()
        return True

    def configure(self, apply: Callable[[Any], None]) -> None:
        """Apply a settings change to the detector (``apply(detector)``), then re-embed
        the current targets; a failure is reported and the targets stay. The targets'
        version is bumped: results computed with the old settings are not published
        (counted as superseded)."""
        with self._update_lock:
            detector = self._detector
            if detector is None:
                return
            apply(detector)
            phrases = self._targets.phrases
            try:
                detector.set_targets(phrases)
            except Exception as exc:
                self._target_failed(phrases, exc)
            with self._lock:
                self._targets = Targets(self._targets.version + 1, self._targets.phrases)

    # --- targets --------------------------------------------------------------------
    def prepare_targets(self, phrases: Sequence[str]) -> str | None:
        """Embed ``phrases`` without switching to them; an error message (reported and
        counted) if that fails, else None. Without a detector there is nothing to check."""
        phrases = tuple(phrases)
        with self._update_lock:
            detector = self._detector
            if detector is None or not phrases:
                return None
            try:
                detector.prepare(phrases)
            except Exception as exc:
                return self._target_failed(phrases, exc)
        return None

    def set_targets(self, phrases: Sequence[str], *,
                    retry_while: Callable[[], bool] | None = None, retry: float = 1.0) -> bool:
        """Switch to ``phrases`` (a new version). Returns False if they cannot be
        embedded: reported, counted, and the old targets stay in force.

        An encoder that is unavailable (its server down or frozen) is not the
        target's fault: with ``retry_while``, the embedding is tried again every
        ``retry`` s while ``retry_while()`` is true (each failure reported, the
        old targets in force meanwhile); False, not counted as refused, once it
        says stop."""
        phrases = tuple(phrases)
        while True:
            with self._update_lock:
                detector = self._detector
                try:
                    if detector is not None:
                        detector.set_targets(phrases)
                except EncoderUnavailableError as exc:
                    if retry_while is None:
                        self._target_failed(phrases, exc)
                        return False
                    if not retry_while():
                        return False  # given up (superseded, shutting down): not refused
                    self._problem("target_unavailable",
                                  f"cannot embed targets {', '.join(phrases)} yet, the encoder "
                                  f"is unavailable (retrying every {retry:g} s): {exc}")
                except Exception as exc:
                    self._target_failed(phrases, exc)
                    return False
                else:
                    with self._lock:
                        self._targets = Targets(self._targets.version + 1, phrases)
                        self._counts["target_updates"] += 1
                    self.health.target_error = None
                    return True
            time.sleep(retry)
            if not retry_while():
                return False

    def _target_failed(self, phrases: tuple[str, ...], exc: Exception) -> str:
        self._count("target_updates_failed")
        still = ", ".join(self._targets.phrases) or "nothing"
        message = (f"could not embed targets {', '.join(phrases)}: {exc!r}; "
                   f"still looking for {still}")
        self.health.target_error = f"{', '.join(phrases)}: {exc!r}"
        self._problem("target", message)
        return message

    # --- frames ---------------------------------------------------------------------
    def submit(self, header: Any, frame: Any, received: float | None = None,
               camera: str = "") -> None:
        """Offer ``camera``'s frame (replacing its one still waiting); ignored while
        stopped. Raises KeyError for a camera the loop was not made with."""
        if camera not in self._camera_counts:
            raise KeyError(f"unknown camera {camera!r}; cameras: {list(self.cameras)}")
        if self._run is None:
            return
        self._count("frames_submitted", camera=camera)
        self.health.input()
        job = Job(header, frame, self._clock() if received is None else received, camera)
        self._slot.put(camera, job)
        if self.tracking is not None and self.tracking.propagating:
            self._flow_slot.put(camera, job)

    # --- start / stop ---------------------------------------------------------------
    def start(self) -> None:
        """Start the worker and publisher threads with an empty slot."""
        with self._lock:
            if self._run is not None:
                return
            run = _Run(self._outbox_size)
            self._slot.clear()
            self._slot.reopen()
            self._flow_slot.clear()
            self._flow_slot.reopen()
            self._run = run
        self.health.started()
        run.worker = threading.Thread(target=self._work, args=(run,),
                                      name="clip_perception_worker", daemon=True)
        run.publisher = threading.Thread(target=self._publish_loop, args=(run,),
                                         name="clip_perception_publisher", daemon=True)
        run.propagator = threading.Thread(target=self._propagate_loop, args=(run,),
                                          name="clip_perception_propagator", daemon=True)
        run.worker.start()
        run.publisher.start()
        run.propagator.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking frames, wait for the job in flight and publish what is queued.

        Returns False if the worker did not finish within ``timeout`` (default
        :attr:`stop_timeout`): that is reported, its result is discarded, and
        :meth:`release` defers its ``after`` until the worker exits.
        """
        timeout = self.stop_timeout if timeout is None else timeout
        with self._lock:
            run, self._run = self._run, None
        if run is None:
            return True
        run.stop.set()
        self._slot.close()
        self._slot.clear()  # no frame from before the stop survives it
        self._flow_slot.close()
        self._flow_slot.clear()
        run.propagator.join(timeout)
        run.worker.join(timeout)
        finished = not run.worker.is_alive()
        if not finished:
            run.abandoned.set()
            with self._lock:
                self._zombies.append(run)
            self._count("stop_timeouts")
            self._problem("stop", f"the worker is still running a frame after {timeout:g} s; "
                                  "its result will be discarded and the model released "
                                  "when it finishes")
        self._put_sentinel(run)
        run.publisher.join(timeout)
        self._slot.clear()
        return finished

    def _put_sentinel(self, run: _Run) -> None:
        while run.publisher.is_alive():
            try:
                run.outbox.put(None, timeout=self._poll)
                return
            except queue.Full:
                continue

    # --- worker thread --------------------------------------------------------------
    def _work(self, run: _Run) -> None:
        try:
            while not run.stop.is_set():
                try:
                    jobs = [job for _, job in self._slot.take(self.max_batch, self._poll)]
                    if not jobs:
                        continue
                    run.taken = tuple(jobs)
                    if run.stop.is_set():  # taken while stopping: dropped, not processed
                        for job in jobs:
                            self._count("frames_cleared", camera=job.camera)
                        continue
                    self._process(run, jobs)
                except Exception as exc:  # anything outside detect too: count, go on
                    self._count("loop_errors")
                    self._problem("worker", f"inference loop error, frame skipped: {exc!r}")
                finally:
                    run.busy_since = None
        finally:
            self._worker_exited(run)

    def _process(self, run: _Run, jobs: list[Job]) -> None:
        run.busy_since = self._clock()
        jobs = self._decoded(jobs)
        if not jobs:
            return
        with self._lock:
            targets, detector = self._targets, self._detector
        if detector is None and self.health.model_error:  # its server is not up yet
            for job in jobs:
                self._count("frames_failed", camera=job.camera)
            return
        if detector is None or not targets.phrases:
            self._count("frames_without_target", len(jobs))
            return
        with_heatmap = bool(self._want_heatmap())
        start = self._clock()
        for job in jobs:
            self.timings.add("wait", start - job.received)
        detections = self._detect(detector, jobs, targets, with_heatmap)
        self.timings.add("processing", self._clock() - start)
        for job, detection in zip(jobs, detections):
            if detection is not None:
                self._hand_over(run, detector, job, detection, targets, with_heatmap)

    def _decoded(self, jobs: list[Job]) -> list[Job]:
        """The jobs with their pending frames decoded (:class:`PendingFrame`: only the
        frames the worker takes are decoded); a rejected frame is dropped here, its
        input having counted and reported it."""
        out = []
        for job in jobs:
            frame = resolve(job.frame)
            if frame is not None:
                out.append(job if frame is job.frame else replace(job, frame=frame))
        return out

    def _detect(self, detector, jobs: list[Job], targets: Targets,
                with_heatmap: bool) -> list:
        """Detections for ``jobs`` (None where a frame failed: counted and reported).

        Several frames go through ``detector.detect_batch`` when it has one; if the
        batch fails for another reason than an unavailable encoder, each frame is
        retried alone, so one bad frame costs only itself."""
        batch = getattr(detector, "detect_batch", None)
        if len(jobs) > 1 and batch is not None:
            try:
                return list(batch([j.frame for j in jobs], targets=targets.phrases,
                                  with_heatmap=with_heatmap))
            except EncoderUnavailableError as exc:
                for job in jobs:
                    self._failed(job, exc)
                return [None] * len(jobs)
            except Exception:
                pass  # find the frame that fails below
        out = []
        for job in jobs:
            try:
                out.append(detector.detect(job.frame, targets=targets.phrases,
                                           with_heatmap=with_heatmap))
            except Exception as exc:
                self._failed(job, exc)
                out.append(None)
        return out

    def _failed(self, job: Job, exc: Exception) -> None:
        self._count("frames_failed", camera=job.camera)
        if isinstance(exc, EncoderUnavailableError):  # a remote encoder is down: ERROR
            self._problem("encoder_unavailable", f"encoder unavailable, frame skipped: {exc}")
        elif isinstance(exc, EncoderRequestError):  # the server failed this frame only: WARN
            self._count("remote_request_errors")
            self._problem("encoder_request", f"the encoder's server failed a frame, skipped: "
                                             f"{exc}")
        else:
            where = f" from camera {job.camera!r}" if job.camera else ""
            self._problem("inference", f"inference failed on a {_size(job.frame)} "
                                       f"frame{where}, skipped: {exc!r}")

    def _hand_over(self, run: _Run, detector, job: Job, detection, targets: Targets,
                   with_heatmap: bool) -> None:
        self._check_budget(detector, job, detection)
        if run.abandoned.is_set():
            self._count("results_after_stop")
            return
        if targets.version != self._targets.version:
            self._count("results_superseded")
            return
        result = Result(job.header, job.frame, detection, targets, with_heatmap, job.received,
                        camera=job.camera)
        if self.tracking is not None:
            try:
                result.tracks = self.tracking.observe(job, detection, detector, targets.phrases)
            except Exception as exc:  # the detection is still published, untracked
                self._problem("tracking", f"tracking failed, result published without "
                                          f"tracks: {exc!r}")
        while True:  # bounded: inference waits if publishing lags
            try:
                run.outbox.put(result, timeout=self._poll)
                return
            except queue.Full:
                if run.abandoned.is_set() or not run.publisher.is_alive():
                    self._count("results_after_stop")
                    return

    def _check_budget(self, detector, job: Job, detection) -> None:
        config = detector.config
        if getattr(detection, "dense_passes", 0):
            return  # hybrid: no coarse grid to refine, the budget advice is crop mode's
        if config.refine and config.refine_stages and not detection.refined:
            self._report(
                "budget", f"refine is on but the {len(detection.windows)} coarse windows of a "
                          f"{_size(job.frame)} frame leave no room in crop_budget "
                          f"{config.crop_budget} for a finer pass; raise crop_budget or "
                          "window_stride")

    def _worker_exited(self, run: _Run) -> None:
        with self._lock:
            if run in self._zombies:
                self._zombies.remove(run)
            # the released model was used by this worker: once no other stopped worker
            # runs either, nothing uses it (a new run works on the model loaded since)
            idle = (self._run is None or self._run is not run) and not any(
                r.worker is not None and r.worker.is_alive() and r.worker is not
                threading.current_thread() for r in self._zombies)
            after = self._after_release if idle else []
            if after:
                self._after_release = []
        for callback in after:
            try:
                callback()
            except Exception as exc:
                self._problem("release", f"releasing the model failed: {exc!r}")

    # --- propagation thread ---------------------------------------------------------
    def _propagate_loop(self, run: _Run) -> None:
        """Carry the tracks to frames newer than the last inference (``propagate`` on)."""
        while not run.stop.is_set():
            try:
                taken = self._flow_slot.take(len(self.cameras), self._poll)
                tracking = self.tracking
                if not taken or tracking is None or not tracking.propagating:
                    continue
                for _, job in taken:
                    self._propagate_one(run, tracking, job)
            except Exception as exc:
                self._count("loop_errors")
                self._problem("propagator", f"propagation error, frame skipped: {exc!r}")

    def _propagate_one(self, run: _Run, tracking, job: Job) -> None:
        if any(job is taken for taken in run.taken):
            return  # the worker has it: its inference result will come
        frame = resolve(job.frame)
        if frame is None:
            return
        targets = self._targets
        job = job if frame is job.frame else replace(job, frame=frame)
        answer = tracking.propagate(job)
        if answer is None or run.abandoned.is_set() or targets.version != self._targets.version:
            return
        detection, tracks = answer
        result = Result(job.header, frame, detection, targets, False, job.received,
                        camera=job.camera, tracks=tracks, source="propagated")
        try:
            run.outbox.put_nowait(result)  # inference results come first: drop, never wait
            self._count("frames_propagated")
        except queue.Full:
            self._count("propagated_dropped")

    # --- publisher thread -----------------------------------------------------------
    def _publish_loop(self, run: _Run) -> None:
        while (result := run.outbox.get()) is not None:
            try:
                self._publish_one(run, result)
            except Exception as exc:
                self._count("loop_errors")
                self._problem("publisher", f"publisher loop error, result skipped: {exc!r}")

    def _publish_one(self, run: _Run, result: Result) -> None:
        if result.targets.version != self._targets.version:
            self._count("results_superseded")  # the target changed while it waited
            return
        if run.found_version != result.targets.version:
            run.found, run.found_version = {}, result.targets.version
        tracks = result.tracks
        if tracks is not None and tracks.source == "inference":
            run.inferred[result.camera] = max(run.inferred.get(result.camera, tracks.stamp),
                                              tracks.stamp)
        elif (tracks is not None and tracks.inference_stamp is not None
              and tracks.inference_stamp < run.inferred.get(result.camera, float("-inf"))):
            self._count("propagated_dropped")  # a newer inference was published meanwhile:
            return                             # its decisions must not be repeated stale
        found = run.found.setdefault(result.camera, {})
        for target in result.detection.targets if result.source == "inference" else ():
            if found.get(target.phrase) != target.present:
                found[target.phrase] = target.present
                result.changes.append(target)
        start = self._clock()
        try:
            self._publish(result)
        except Exception as exc:
            self._count("publish_failed")
            self._problem("publish", f"publishing failed: {exc!r}")
            return
        self.timings.add("publish", self._clock() - start)
        if result.source != "inference":
            return  # counted in frames_propagated
        self._count("frames_processed", camera=result.camera)
        with self._lock:
            self._result_times[result.camera].append(self._clock())
        self.health.result()


def _size(frame: Any) -> str:
    width, height = getattr(frame, "width", "?"), getattr(frame, "height", "?")
    return f"{width}x{height}"
