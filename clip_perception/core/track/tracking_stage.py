"""The tracking stage of one node: per camera, detections to tracks, and propagation.

:class:`TrackingStage` is handed to the inference loop, which calls
:meth:`~TrackingStage.observe` on the worker thread with every detection
(stamp order per camera) and, with ``propagate`` on,
:meth:`~TrackingStage.propagate` on its propagation thread with newer frames.
``observe`` embeds the found regions (:mod:`..detect.box_embeddings`), places
them in 3D where the frame has depth, and updates the camera's
:class:`~.tracker.Tracker`. ``propagate`` carries each track seen in the last
inference to a newer frame by optical flow (:mod:`.optical_flow`) and returns
a detection for that frame marked ``propagated``: same ``present`` and
``stable`` as the last inference, moved boxes; tracks are not changed by it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..detect.box_embeddings import box_embeddings, tracked_boxes
from ..detect.results import Detection
from ..io.result_json import FrameResult, TrackEntry
from ..spatial.locate3d import Position3D, locate, locate_targets
from .optical_flow import flow_box, grey, moved_box
from .tracker import RECENT, Observation, TargetTracks, TrackConfig, Tracker, TrackFrame

SOURCE_INFERENCE = "inference"
SOURCE_PROPAGATED = "propagated"
GREY_FRAMES = 48  # recent grey frames kept per camera for propagation (3 s at 15 Hz)


@dataclass(frozen=True)
class TrackingConfig:
    """``track``: memory and hysteresis; ``propagate``: carry boxes to newer frames;
    ``depth_range``: metres, as the node's parameter; ``appearance``: embed found regions."""

    track: TrackConfig = TrackConfig()
    propagate: bool = False
    depth_range: tuple[float, float] = (0.1, 10.0)
    appearance: bool = True


@dataclass
class _Camera:
    tracker: Tracker
    greys: deque = field(default_factory=lambda: deque(maxlen=GREY_FRAMES))
    last: tuple[float, Detection, TrackFrame] | None = None  # the last inference
    anchors: dict[str, tuple[float, tuple]] = field(default_factory=dict)  # id -> (t, box)
    newest: float = float("-inf")


class TrackingStage:
    """Tracks for every camera of a loop.

    Args:
        stamp_of: a job header -> its stamp in seconds.
        config: settings (:meth:`configure` changes them live).
        camera_state: camera name -> ``(intrinsics or None, why-not or None)`` for frames
            that do not carry their intrinsics.
    """

    def __init__(self, stamp_of: Callable[[Any], float], config: TrackingConfig = TrackingConfig(),
                 camera_state: Callable[[str], tuple] | None = None):
        self._stamp_of = stamp_of
        self.config = config
        self._camera_state = camera_state or (lambda name: (None, None))
        self._cameras: dict[str, _Camera] = {}
        self._lock = threading.Lock()

    def configure(self, config: TrackingConfig) -> None:
        with self._lock:
            self.config = config
            for cam in self._cameras.values():
                cam.tracker.config = config.track

    @property
    def propagating(self) -> bool:
        return self.config.propagate

    def _camera(self, name: str) -> _Camera:
        cam = self._cameras.get(name)
        if cam is None:
            cam = self._cameras[name] = _Camera(Tracker(self.config.track,
                                                        f"{name}/" if name else ""))
        return cam

    def reset(self) -> dict[str, TrackFrame]:
        """End every track (the loop stopped); per camera, a frame with their removals."""
        with self._lock:
            out = {}
            for name, cam in self._cameras.items():
                events = cam.tracker.clear()
                if events:
                    out[name] = TrackFrame(cam.tracker.last_stamp, SOURCE_INFERENCE, [], events)
            self._cameras.clear()
            return out

    # --- the worker thread ------------------------------------------------------
    def _locate(self, frame, camera: str, detection: Detection):
        depth = getattr(frame, "depth", None)
        if not hasattr(frame, "depth"):
            return None, None
        intrinsics, problem = getattr(frame, "camera", None), None
        if intrinsics is None:
            intrinsics, problem = self._camera_state(camera)
        located = locate_targets(detection, depth, intrinsics, self.config.depth_range,
                                 getattr(frame, "missing", None) or problem)
        return located, intrinsics

    def observe(self, job, detection: Detection, detector, phrases: Sequence[str]) -> TrackFrame:
        """Update ``job.camera``'s tracks with ``detection`` of ``job.frame``."""
        t = float(self._stamp_of(job.header))
        frame = job.frame
        located, intrinsics = self._locate(frame, job.camera, detection)
        found = [(i, tr) for i, tr in enumerate(detection.targets) if tr.present]
        boxes = tracked_boxes(detection)  # the found regions, then the whole frame
        embeddings = context = None
        if boxes and self.config.appearance and detector is not None:
            embeddings = detection.box_embeddings  # a server-side detector sends them
            if embeddings is None or len(embeddings) != len(boxes):
                embeddings = box_embeddings(detector.encoder, frame, boxes)
            context = embeddings[-1]
        observations: dict[str, list[Observation]] = {}
        row = 0
        for i, target in found:
            obs = []
            for role, box, score in (("box", target.box, target.score),
                                     ("second", target.second_box, target.second_score)):
                if box is None:
                    continue
                o = Observation(tuple(int(v) for v in box), float(score),
                                None if embeddings is None else embeddings[row],
                                context=context)
                row += 1
                loc = located[i] if (located and role == "box") else None
                if role == "second" and located is not None and intrinsics is not None \
                        and getattr(frame, "depth", None) is not None:
                    loc = locate(frame.depth, box, (detection.width, detection.height),
                                 intrinsics, self.config.depth_range)
                if isinstance(loc, Position3D):
                    o.point, o.covariance, o.size = loc.point, loc.covariance, loc.size
                obs.append(o)
            observations[target.phrase] = obs
        with self._lock:
            cam = self._camera(job.camera)
            result = cam.tracker.update(t, observations, tuple(phrases),
                                        (detection.width, detection.height))
            result.located = located
            if self.config.propagate:
                cam.greys.append((t, grey(frame.pixels, frame.order)))
                cam.last = (t, detection, result)
                cam.anchors = {s.track.id: (t, s.track.box) for s in result.targets
                               if s.track is not None and s.track.seen}
                for s in result.targets:
                    second = cam.tracker._by_id(s.second_id)
                    if second is not None:
                        cam.anchors[second.id] = (t, cam.tracker.state(second, t, True).box)
            return result

    # --- the propagation thread -------------------------------------------------
    def propagate(self, job) -> tuple[Detection, TrackFrame] | None:
        """A propagated detection and tracks for ``job.frame``, newer than the last
        inference of its camera; None when there is nothing to carry."""
        t = float(self._stamp_of(job.header))
        frame = job.frame
        current = grey(frame.pixels, frame.order)
        with self._lock:
            cam = self._cameras.get(job.camera)
            if cam is None or cam.last is None or t <= cam.last[0] or t <= cam.newest:
                return None
            greys = list(cam.greys)
            cam.greys.append((t, current))
            cam.newest = t
            t0, detection, inferred = cam.last
            moved: dict[str, tuple] = {}
            for track_id, (ta, box) in list(cam.anchors.items()):
                new = _carry(greys, ta, box, t, current)
                if new is not None:
                    moved[track_id] = new
                    cam.anchors[track_id] = (t, new)
            if not moved:
                return None
            targets, tracks = [], []
            for target, state in zip(detection.targets, inferred.targets):
                box = second = None
                if state.track is not None and state.track.id in moved and target.present:
                    box = _int_box(moved[state.track.id], detection.width, detection.height)
                if state.second_id in moved and target.second_box is not None:
                    second = _int_box(moved[state.second_id], detection.width, detection.height)
                targets.append(replace(target, box=box or target.box,
                                       second_box=second if target.second_box is not None
                                       else None))
                track = state.track
                if track is not None and box is not None:
                    kalman = cam.tracker._by_id(track.id)
                    track = replace(track, box=box, age=max(t - (kalman.last_seen if kalman
                                                                 else t0), 0.0))
                tracks.append(TargetTracks(state.phrase, state.stable, track, state.second_id))
        out = replace(detection, targets=targets, heatmaps=[])
        result = TrackFrame(t, SOURCE_PROPAGATED, tracks, inference_stamp=t0)
        result.located, _ = self._locate(frame, job.camera, out)
        return out, result


def _carry(greys: list, ta: float, box, t: float, current: np.ndarray):
    """``box`` at time ``ta`` carried through the kept frames after it to ``current``."""
    start = next((g for s, g in greys if s == ta), None)
    if start is None or t - ta > GREY_FRAMES / 15.0 + RECENT:
        return None
    chain = [g for s, g in greys if ta < s < t] + [current]
    previous = start
    for g in chain:
        step = flow_box(previous, g, box)
        if step is None:
            return None
        box = moved_box(box, *step)
        previous = g
    return box


def _int_box(box, width: int, height: int) -> tuple[int, int, int, int] | None:
    x0, y0, x1, y1 = box
    x0, x1 = int(round(max(x0, 0))), int(round(min(x1, width)))
    y0, y1 = int(round(max(y0, 0))), int(round(min(y1, height)))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def tracked_result(result: FrameResult, tracks: TrackFrame | None) -> FrameResult:
    """``result`` (:func:`~..spatial.locate3d.frame_result`) with the frame's tracks:
    ``track_id``, ``stable``, ``track`` per target and the document's ``source``."""
    if tracks is None:
        return result
    by_phrase = {t.phrase: t for t in tracks.targets}
    entries = []
    for entry in result.targets:
        state = by_phrase.get(entry.phrase)
        if state is None:
            entries.append(entry)
            continue
        track = state.track
        entries.append(replace(
            entry, stable=state.stable, track_id=track.id if track else None,
            second_track_id=state.second_id if entry.second_box is not None else None,
            track=TrackEntry(track.box, track.point, track.covariance, track.age)
            if track else None))
    return replace(result, targets=tuple(entries), source=tracks.source)


def result_document(stamp_ns: int, frame_id: str, detection: Detection,
                    tracks: TrackFrame | None, located=None) -> FrameResult:
    """The ``result`` document of one frame, tracks included: what the node publishes.
    ``located`` defaults to the tracks' (None: no depth input)."""
    from ..spatial.locate3d import frame_result

    if located is None and tracks is not None:
        located = tracks.located
    return tracked_result(frame_result(stamp_ns, frame_id, detection, located), tracks)
