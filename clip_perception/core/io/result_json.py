"""The self-describing, versioned per-frame result (JSON on the ``result`` topic).

No ROS import. One document per processed frame, carried in std_msgs/String,
readable by a Python planner or an LLM agent without vision_msgs::

    {
      "schema": "clip_perception/result", "version": 1, "revision": 2,
      "source": "inference",                      # or "propagated" (below)
      "stamp": {"sec": 1700000000, "nanosec": 500000000},
      "frame_id": "camera_color_optical_frame",
      "image": {"width": 640, "height": 480},
      "targets": [
        {"phrase": "red mug", "present": true, "score": 0.97,
         "box": [x0, y0, x1, y1],                 # pixels, x1/y1 exclusive; null if absent
         "position": [x, y, z],                   # metres, optical frame; null if none
         "covariance": [9 values, row-major 3x3], # m^2; null when position is null
         "depth_status": "ok",                    # or a reason: depth_missing, depth_zero, ...
         "second": {"box": [x0, y0, x1, y1], "score": 0.91,
                    "track_id": "red_mug_2"},     # or null (below); track_id if tracked
         "track_id": "red_mug_1",                 # the object's identity; null if untracked
         "stable": true,                          # steady presence (below)
         "track": {"box": [x0, y0, x1, y1],       # the track's smoothed box
                   "position": [x, y, z],         # filtered, metres; null without depth
                   "covariance": [9 values],      # its covariance, m^2; null likewise
                   "age": 0.0}}                   # s since the object was last found
      ]
    }

``targets`` lists every target searched in that frame, in command order,
found or not. ``box`` is present only when ``present`` is true.
``depth_status`` is ``"not_requested"`` when the node has no depth input
and ``"not_found"`` for a target that was not found. A reader must check
``schema`` and ``version``; :func:`parse_result` does.

``second`` (added within version 1; absent in older documents, read as null):
another region, apart from ``box``, that scores present on its own: a second
instance of the target. ``box`` is always the more confident one, so a planner
that wants one object takes ``box`` and one that wants them all reads ``second``
too. Null when the target is not present or no other region scores present.

Revision 2 (``revision``; absent in older documents, which are revision 1) adds
tracks, each field optional for a reader: ``track_id`` (a string, the same
while it is the same object, also after it was hidden or out of view for up
to the node's ``track_memory``), ``stable`` (true after ``stable_k`` of the
last ``stable_n`` inferences found the target, false after ``stable_m``
missed it in a row; ``present`` stays the single frame's decision), ``track``
(the track's smoothed box and filtered 3D position, also while the target is
briefly not found; null when there is no track), ``second.track_id`` and the
document's ``source``: ``"inference"`` for a frame CLIP answered,
``"propagated"`` for a newer frame whose boxes the node carried there by
optical flow (``present`` and ``stable`` then repeat the last inference).
:func:`parse_result` reads an older document's ``stable`` as its ``present``,
``source`` as ``"inference"`` and the other new fields as null. A reader of
revision 1 reads a revision 2 document unchanged (it ignores fields it does
not know); a change that such a reader would misread gets a new ``version``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

SCHEMA = "clip_perception/result"
VERSION = 1
REVISION = 2
SOURCE_INFERENCE = "inference"
SOURCE_PROPAGATED = "propagated"
STATUS_OK = "ok"
STATUS_NOT_REQUESTED = "not_requested"
STATUS_NOT_FOUND = "not_found"


class ResultSchemaError(ValueError):
    """A document that is not a result of a schema version this code reads."""


@dataclass(frozen=True)
class TrackEntry:
    """A target's track in one frame: smoothed box, filtered position (or None)."""

    box: tuple[int, int, int, int]
    position: tuple[float, float, float] | None = None
    covariance: tuple[float, ...] | None = None
    age: float = 0.0


@dataclass(frozen=True)
class TargetEntry:
    phrase: str
    present: bool
    score: float
    box: tuple[int, int, int, int] | None
    position: tuple[float, float, float] | None = None
    covariance: tuple[float, ...] | None = None
    depth_status: str = STATUS_NOT_REQUESTED
    second_box: tuple[int, int, int, int] | None = None
    second_score: float = 0.0
    track_id: str | None = None
    stable: bool | None = None      # None: not tracked (written as ``present``)
    track: TrackEntry | None = None
    second_track_id: str | None = None

    @property
    def steady(self) -> bool:
        """``stable`` where the document has it, else ``present``."""
        return self.present if self.stable is None else self.stable


@dataclass(frozen=True)
class FrameResult:
    stamp_ns: int
    frame_id: str
    width: int
    height: int
    targets: tuple[TargetEntry, ...]
    source: str = SOURCE_INFERENCE
    revision: int = REVISION

    @property
    def phrases(self) -> tuple[str, ...]:
        return tuple(t.phrase for t in self.targets)

    def target(self, phrase: str) -> TargetEntry | None:
        return next((t for t in self.targets if t.phrase == phrase), None)


def _finite(values: Sequence[float]) -> list[float]:
    """Finite floats to 6 significant digits (micrometres at robot distances)."""
    out = [float(f"{float(v):.6g}") for v in values]
    if not all(math.isfinite(v) for v in out):
        raise ValueError("non-finite value in a result")
    return out


def result_json(result: FrameResult) -> str:
    """The JSON document for one frame (compact, keys in a fixed order)."""
    sec, nanosec = divmod(int(result.stamp_ns), 10**9)
    targets = []
    for t in result.targets:
        targets.append({
            "phrase": t.phrase, "present": bool(t.present), "score": round(float(t.score), 6),
            "box": [int(v) for v in t.box] if (t.present and t.box is not None) else None,
            "position": _finite(t.position) if t.position is not None else None,
            "covariance": _finite(t.covariance) if t.position is not None
            and t.covariance is not None else None,
            "depth_status": t.depth_status,
            "second": ({"box": [int(v) for v in t.second_box],
                        "score": round(float(t.second_score), 6),
                        **({"track_id": t.second_track_id} if t.second_track_id else {})}
                       if t.present and t.second_box is not None else None),
            "track_id": t.track_id,
            "stable": bool(t.steady),
            "track": _track_json(t.track),
        })
    doc = {"schema": SCHEMA, "version": VERSION, "revision": REVISION,
           "source": result.source, "stamp": {"sec": sec, "nanosec": nanosec},
           "frame_id": result.frame_id,
           "image": {"width": int(result.width), "height": int(result.height)},
           "targets": targets}
    return json.dumps(doc, separators=(",", ":"))


def _track_json(track: TrackEntry | None) -> dict | None:
    if track is None:
        return None
    return {"box": [int(v) for v in track.box],
            "position": _finite(track.position) if track.position is not None else None,
            "covariance": _finite(track.covariance) if track.position is not None
            and track.covariance is not None else None,
            "age": round(float(track.age), 3)}


def _second(entry) -> tuple[tuple[int, int, int, int] | None, float]:
    if entry is None:
        return None, 0.0
    return tuple(int(v) for v in entry["box"]), float(entry["score"])


def _track(entry) -> TrackEntry | None:
    if entry is None:
        return None
    return TrackEntry(tuple(int(v) for v in entry["box"]),
                      tuple(entry["position"]) if entry.get("position") is not None else None,
                      tuple(entry["covariance"]) if entry.get("covariance") is not None
                      else None, float(entry.get("age", 0.0)))


def parse_result(text: str) -> FrameResult:
    """Read a document written by :func:`result_json` (raises ResultSchemaError)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultSchemaError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ResultSchemaError(f"not a {SCHEMA} document")
    if doc.get("version") != VERSION:
        raise ResultSchemaError(f"{SCHEMA} version {doc.get('version')!r}; this reader reads "
                                f"version {VERSION}")
    try:
        stamp = doc["stamp"]["sec"] * 10**9 + doc["stamp"]["nanosec"]
        targets = tuple(
            TargetEntry(t["phrase"], bool(t["present"]), float(t["score"]),
                        tuple(t["box"]) if t["box"] is not None else None,
                        tuple(t["position"]) if t["position"] is not None else None,
                        tuple(t["covariance"]) if t["covariance"] is not None else None,
                        t["depth_status"],
                        *_second(t.get("second")),
                        t.get("track_id"),
                        bool(t["stable"]) if "stable" in t else None,
                        _track(t.get("track")),
                        (t.get("second") or {}).get("track_id"))
            for t in doc["targets"])
        return FrameResult(int(stamp), doc["frame_id"], int(doc["image"]["width"]),
                           int(doc["image"]["height"]), targets,
                           doc.get("source", SOURCE_INFERENCE), int(doc.get("revision", 1)))
    except (KeyError, TypeError) as exc:
        raise ResultSchemaError(f"malformed {SCHEMA} document: {exc!r}") from exc
