"""Tracks of one camera: association, memory, steady presence and filtered positions.

Per inference frame, each target phrase's found regions (``box`` and
``second``) are assigned to that phrase's tracks by :func:`.association.solve`
on a gated cost:

* geometry: the distance of the region's centre from the track's predicted
  box, in units of the box's size, against a gate that widens with the time
  since the track was last seen (an object may come back elsewhere), plus
  ``1 - IoU``; a size change beyond :data:`MAX_SIZE_RATIO` is not the same object,
  unless the region is a smaller one inside the track's box (a part of it found);
* 3D, where both have a position and the track was seen within
  :data:`RECENT` s: a jump farther than the object can have moved since
  (:meth:`.filters.Kalman3D.jump`) starts a new track;
* appearance: the region embedding's cosine distance to the track's stored
  embedding relative to the track's own past matches (:mod:`.appearance`);
  far beyond them is not the same object (a wider gate for a track seen within
  :data:`RECENT` s, a region back where the track was last seen, or one the border
  cuts: it may still be partly covered or out of view).

A region left unassigned starts a track; a track unseen for ``memory`` s ends.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..detect.windows import box_intersection, box_iou
from .appearance import AppearanceMemory
from .association import INFEASIBLE, centre_distance, size_ratio, solve
from .filters import BoxFilter, Kalman3D
from .hysteresis import Hysteresis, HysteresisConfig

GATE = 1.0             # box sizes: how far a region may be from a track's prediction...
GATE_GROWTH = 1.5      # ...plus this many box sizes per second unseen
MAX_SIZE_RATIO = 2.5   # a region this much wider or taller than the track is another object
APPEARANCE_GATE = 4.0  # distance ratio beyond which a region is another object...
APPEARANCE_GATE_RECENT = 16.0  # ...or, for a track seen within RECENT s or a region the
                               # border cuts, this (a region the border cuts or an arm
                               # covers in part looks less alike)
RECENT = 1.0           # s: tracks seen this recently are gated in 3D and preferred
SAME_PLACE_IOU = 0.5   # a region overlapping a track's last box this much is back in place
PART_SHARE = 0.8       # a smaller region this much inside a track's box is part of it
LOST_PENALTY = 0.5     # cost added for a track not seen recently
MOVE_METRES = 0.005    # a stable track's position change that is reported as a move
BORDER = 0.05          # of the frame: a region's side this near the border may be cut


def _part_of(box, whole) -> bool:
    """``box`` is smaller than ``whole`` and lies mostly inside it (a part of the object
    found: partly covered, or a box that came out small)."""
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    return (area < (whole[2] - whole[0]) * (whole[3] - whole[1])
            and box_intersection(box, whole) >= PART_SHARE * area)


def _cut(amodal, box) -> bool:
    """The border cuts ``box``: :meth:`Tracker._amodal` extended it to ``amodal``."""
    return tuple(amodal) != tuple(float(v) for v in box)


@dataclass(frozen=True)
class TrackConfig:
    """``memory``: seconds a track unseen is remembered; ``hysteresis``: steady presence."""

    memory: float = 10.0
    hysteresis: HysteresisConfig = HysteresisConfig()


@dataclass
class Observation:
    """One found region of a target in one frame."""

    box: tuple[int, int, int, int]
    score: float
    embedding: np.ndarray | None = None
    point: np.ndarray | None = None       # metres, optical frame
    covariance: np.ndarray | None = None  # 3x3, m^2
    size: np.ndarray | None = None        # metres (x, y, z extent)
    context: np.ndarray | None = None     # the whole frame's embedding


@dataclass
class Track:
    """One object over time."""

    id: str
    phrase: str
    boxes: BoxFilter
    appearance: AppearanceMemory
    hysteresis: Hysteresis
    first_seen: float
    last_seen: float
    score: float
    kalman: Kalman3D | None = None
    size: np.ndarray | None = None
    hits: int = 1
    added: bool = False            # a collision object was added for it
    missed_since: float | None = None  # the first inference since last_seen that missed it
    reported_point: np.ndarray | None = None

    @property
    def stable(self) -> bool:
        return self.hysteresis.stable

    def box(self, t: float) -> tuple[float, float, float, float]:
        return self.boxes.predicted(t, horizon=0.0)


@dataclass(frozen=True)
class TrackState:
    """A track as published for one frame."""

    id: str
    phrase: str
    stable: bool
    box: tuple[int, int, int, int]
    point: tuple[float, float, float] | None
    covariance: tuple[float, ...] | None
    size: tuple[float, float, float] | None
    seen: bool            # matched in this frame
    age: float            # seconds since last seen


@dataclass(frozen=True)
class TargetTracks:
    """What the tracks say about one target in one frame: its track (the one of
    ``box``, or the last one seen when not present), the second instance's track, and the
    target's steady presence."""

    phrase: str
    stable: bool
    track: TrackState | None
    second_id: str | None = None


@dataclass(frozen=True)
class SceneEvent:
    """``add`` when a track becomes stable (with a 3D position), ``move`` when it moves,
    ``remove`` when it ends."""

    kind: str
    track: TrackState


@dataclass
class TrackFrame:
    """The tracking stage's output for one frame."""

    stamp: float
    source: str                                  # "inference" or "propagated"
    targets: list[TargetTracks]
    events: list[SceneEvent] = field(default_factory=list)
    located: list | None = None                  # per target: 3D or why not; None: no depth
    inference_stamp: float | None = None         # propagated: the inference it carries


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "target"


class Tracker:
    """The tracks of one camera; not thread-safe (the tracking stage locks around it)."""

    def __init__(self, config: TrackConfig = TrackConfig(), prefix: str = ""):
        self.config = config
        self.prefix = prefix
        self.tracks: list[Track] = []
        self.presence: dict[str, Hysteresis] = {}
        self.primary: dict[str, str] = {}   # phrase -> id of the track of its ``box``
        self._next = 0
        self.last_stamp = float("-inf")
        self._frame: tuple[int, int] | None = None

    # --- one inference frame ----------------------------------------------------
    def update(self, t: float, observations: dict[str, list[Observation]],
               phrases: Sequence[str], size: tuple[int, int] | None = None) -> TrackFrame:
        """Associate the frame's regions (per phrase: ``box`` first, then ``second``);
        ``size``: the frame's (width, height), so a box the border cuts compares with
        the visible part of a track's prediction."""
        self.last_stamp = max(self.last_stamp, t)
        self._frame = size
        events = self._forget(t, phrases)
        out = []
        for phrase in phrases:
            obs = observations.get(phrase, [])
            presence = self.presence.setdefault(phrase, Hysteresis(self.config.hysteresis))
            stable = presence.update(bool(obs))
            ids = self._associate(t, phrase, obs, events)
            if ids:
                self.primary[phrase] = ids[0]
            primary = self._by_id(self.primary.get(phrase))
            out.append(TargetTracks(phrase, stable,
                                    self.state(primary, t, seen=bool(ids)) if primary else None,
                                    ids[1] if len(ids) > 1 else None))
        return TrackFrame(t, "inference", out, events)

    def _associate(self, t: float, phrase: str, obs: list[Observation],
                   events: list[SceneEvent]) -> list[str]:
        tracks = [tr for tr in self.tracks if tr.phrase == phrase]
        cost = np.full((len(tracks), len(obs)), INFEASIBLE)
        for i, tr in enumerate(tracks):
            for j, o in enumerate(obs):
                cost[i, j] = self._cost(tr, o, t)
        pairs = dict((j, i) for i, j in solve(cost))
        ids = []
        matched = set()
        for j, o in enumerate(obs):
            if j in pairs:
                tr = tracks[pairs[j]]
                self._match(tr, o, t)
            else:
                tr = self._start(phrase, o, t)
            matched.add(tr.id)
            ids.append(tr.id)
        for tr in tracks:
            if tr.id not in matched:
                tr.hysteresis.update(False)
                if tr.missed_since is None:
                    tr.missed_since = t
        for tr in (x for x in self.tracks if x.phrase == phrase):
            events.extend(self._scene_events(tr, t))
        return ids

    def _cost(self, tr: Track, o: Observation, t: float) -> float:
        dt = max(t - tr.last_seen, 0.0)
        box = self._amodal(o.box, tr)
        # moving on as it moved, or stopped where it was last seen (an object put down
        # after a fast move would otherwise be predicted far past where it stands)
        stopped = tr.boxes.predicted(t, horizon=0.0)
        predicted = min((tr.boxes.predicted(t), stopped), key=lambda b: centre_distance(b, box))
        d = centre_distance(predicted, box)
        gate = GATE + GATE_GROWTH * dt
        if d > gate or (size_ratio(predicted, box) > MAX_SIZE_RATIO
                        and not _part_of(box, predicted)):
            return INFEASIBLE
        if (dt <= RECENT and tr.kalman is not None and o.point is not None
                and tr.kalman.jump(o.point, o.covariance, t)):
            return INFEASIBLE
        ratio = tr.appearance.ratio(o.embedding)
        # seen just now, back where it was last seen, or cut by the border: it may be
        # partly covered or out of view yet, so it may look less alike
        in_place = box_iou(stopped, box) >= SAME_PLACE_IOU
        if ratio > (APPEARANCE_GATE_RECENT if dt <= RECENT or in_place or _cut(box, o.box)
                    else APPEARANCE_GATE):
            return INFEASIBLE
        ratio = min(ratio, APPEARANCE_GATE)
        return (d / gate + (1.0 - box_iou(predicted, box)) + 0.5 * ratio / APPEARANCE_GATE
                + (LOST_PENALTY if dt > RECENT else 0.0))

    def _start(self, phrase: str, o: Observation, t: float) -> Track:
        self._next += 1
        tr = Track(f"{self.prefix}{slug(phrase)}_{self._next}", phrase, BoxFilter(o.box, t),
                   AppearanceMemory(None), Hysteresis(self.config.hysteresis), t, t,
                   o.score)
        tr.appearance.update(o.embedding, o.context)
        if o.point is not None:
            tr.kalman, tr.size = Kalman3D(o.point, o.covariance, t), o.size
        tr.hysteresis.update(True)
        self.tracks.append(tr)
        return tr

    def _amodal(self, box, tr: Track) -> tuple[float, float, float, float]:
        """``box`` with a side the frame's border cuts extended to the track's size: an
        object half out of view keeps its size and its centre moves with it."""
        if self._frame is None:
            return box
        width, height = self._frame
        mx, my = BORDER * width, BORDER * height  # a region this near the border is cut
        w, h = tr.boxes.size
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 >= width - mx and x0 > mx:
            x1 = max(x1, x0 + w)
        elif x0 <= mx and x1 < width - mx:
            x0 = min(x0, x1 - w)
        if y1 >= height - my and y0 > my:
            y1 = max(y1, y0 + h)
        elif y0 <= my and y1 < height - my:
            y0 = min(y0, y1 - h)
        return (x0, y0, x1, y1)

    def _match(self, tr: Track, o: Observation, t: float) -> None:
        box = self._amodal(o.box, tr)
        if t - tr.last_seen > RECENT:  # back after a while: no stale velocity
            tr.boxes = BoxFilter(box, t)
        else:
            tr.boxes.update(box, t)
        if not _cut(box, o.box):  # a region the border cuts would teach a partial look
            tr.appearance.update(o.embedding, o.context)
        if o.point is not None:
            if tr.kalman is None or t - tr.last_seen > RECENT:
                tr.kalman = Kalman3D(o.point, o.covariance, t)
            else:
                tr.kalman.update(o.point, o.covariance, t)
            tr.size = o.size if tr.size is None else 0.7 * tr.size + 0.3 * o.size
        tr.hysteresis.update(True)
        tr.last_seen, tr.score, tr.missed_since = t, o.score, None
        tr.hits += 1

    def _scene_events(self, tr: Track, t: float) -> list[SceneEvent]:
        if tr.kalman is None or not tr.stable:
            return []
        point = tr.kalman.point
        if not tr.added:
            tr.added, tr.reported_point = True, point
            return [SceneEvent("add", self.state(tr, t, seen=tr.last_seen == t))]
        if np.linalg.norm(point - tr.reported_point) > MOVE_METRES:
            tr.reported_point = point
            return [SceneEvent("move", self.state(tr, t, seen=tr.last_seen == t))]
        return []

    def _forget(self, t: float, phrases: Sequence[str]) -> list[SceneEvent]:
        """End tracks unseen for ``memory`` s and tracks of phrases no longer searched."""
        keep, events = [], []
        for tr in self.tracks:
            # out of view since somewhere between last_seen and the first miss: count from
            # the miss, so a slow cadence does not eat into the memory
            gone = tr.missed_since if tr.missed_since is not None else tr.last_seen
            if t - gone > self.config.memory or tr.phrase not in phrases:
                if tr.added:
                    events.append(SceneEvent("remove", self.state(tr, t, seen=False)))
                if self.primary.get(tr.phrase) == tr.id:
                    del self.primary[tr.phrase]
            else:
                keep.append(tr)
        self.tracks = keep
        for phrase in [p for p in self.presence if p not in phrases]:
            del self.presence[phrase]
        return events

    def clear(self, t: float | None = None) -> list[SceneEvent]:
        """End every track (e.g. the node stops); their ``remove`` events."""
        return self._forget(self.last_stamp if t is None else t, ())

    # --- helpers ----------------------------------------------------------------
    def _by_id(self, track_id: str | None) -> Track | None:
        return next((tr for tr in self.tracks if tr.id == track_id), None)

    def state(self, tr: Track, t: float, seen: bool, box=None) -> TrackState:
        box = tr.box(t) if box is None else box
        point = cov = size = None
        if tr.kalman is not None:
            point = tuple(float(v) for v in tr.kalman.point)
            cov = tuple(float(v) for v in tr.kalman.covariance.reshape(-1))
            size = tuple(float(v) for v in tr.size) if tr.size is not None else None
        return TrackState(tr.id, tr.phrase, tr.stable, tuple(int(round(v)) for v in box),
                          point, cov, size, seen, max(t - tr.last_seen, 0.0))
