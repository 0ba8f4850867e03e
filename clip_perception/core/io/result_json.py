"""The self-describing, versioned per-frame result (JSON on the ``result`` topic).

No ROS import. One document per processed frame, carried in std_msgs/String,
readable by a Python planner or an LLM agent without vision_msgs::

    {
      "schema": "clip_perception/result", "version": 1,
      "stamp": {"sec": 1700000000, "nanosec": 500000000},
      "frame_id": "camera_color_optical_frame",
      "image": {"width": 640, "height": 480},
      "targets": [
        {"phrase": "red mug", "present": true, "score": 0.97,
         "box": [x0, y0, x1, y1],                 # pixels, x1/y1 exclusive; null if absent
         "position": [x, y, z],                   # metres, optical frame; null if none
         "covariance": [9 values, row-major 3x3], # m^2; null when position is null
         "depth_status": "ok",                    # or a reason: depth_missing, depth_zero, ...
         "second": {"box": [x0, y0, x1, y1], "score": 0.91}}  # or null (below)
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
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

SCHEMA = "clip_perception/result"
VERSION = 1
STATUS_OK = "ok"
STATUS_NOT_REQUESTED = "not_requested"
STATUS_NOT_FOUND = "not_found"


class ResultSchemaError(ValueError):
    """A document that is not a result of a schema version this code reads."""


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


@dataclass(frozen=True)
class FrameResult:
    stamp_ns: int
    frame_id: str
    width: int
    height: int
    targets: tuple[TargetEntry, ...]

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
                        "score": round(float(t.second_score), 6)}
                       if t.present and t.second_box is not None else None),
        })
    doc = {"schema": SCHEMA, "version": VERSION, "stamp": {"sec": sec, "nanosec": nanosec},
           "frame_id": result.frame_id,
           "image": {"width": int(result.width), "height": int(result.height)},
           "targets": targets}
    return json.dumps(doc, separators=(",", ":"))


def _second(entry) -> tuple[tuple[int, int, int, int] | None, float]:
    if entry is None:
        return None, 0.0
    return tuple(int(v) for v in entry["box"]), float(entry["score"])


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
                        *_second(t.get("second")))
            for t in doc["targets"])
        return FrameResult(int(stamp), doc["frame_id"], int(doc["image"]["width"]),
                           int(doc["image"]["height"]), targets)
    except (KeyError, TypeError) as exc:
        raise ResultSchemaError(f"malformed {SCHEMA} document: {exc!r}") from exc
