"""Per-frame glue: a Detection plus (optional) depth to 3D positions and the result document.

No ROS import. The node (or a tool) decodes the messages, then calls
:func:`locate_targets` and :func:`frame_result`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .camera_model import PinholeCamera
from .detector import Detection
from .locate3d import (
    REASON_NO_CAMERA_INFO,
    REASON_NO_DEPTH,
    DepthInvalid,
    Position3D,
    locate,
)
from .result_json import (
    STATUS_NOT_FOUND,
    STATUS_NOT_REQUESTED,
    STATUS_OK,
    FrameResult,
    TargetEntry,
)

Located = Position3D | DepthInvalid | None  # None: target not found


def locate_targets(detection: Detection, depth: np.ndarray | None,
                   camera: PinholeCamera | None, depth_range: tuple[float, float],
                   missing: DepthInvalid | None = None) -> list[Located]:
    """One entry per target: a position, why there is none, or None (not found).

    ``missing`` is the reason to give when ``depth`` or ``camera`` is None
    (defaults: no depth paired, no camera_info yet).
    """
    out: list[Located] = []
    for t, target in enumerate(detection.targets):
        if not target.present:
            out.append(None)
        elif depth is None:
            out.append(missing or DepthInvalid(REASON_NO_DEPTH, "no depth frame within "
                                                                "depth_sync_tolerance"))
        elif camera is None:
            out.append(missing or DepthInvalid(REASON_NO_CAMERA_INFO, "no camera_info yet"))
        else:
            heat = detection.heatmaps[t] if t < len(detection.heatmaps) else None
            out.append(locate(depth, target.box, (detection.width, detection.height), camera,
                              depth_range, heat, detection.heatmap_cell))
    return out


def frame_result(stamp_ns: int, frame_id: str, detection: Detection,
                 located: Sequence[Located] | None = None) -> FrameResult:
    """The :class:`FrameResult` for the ``result`` topic; ``located=None``: no depth input."""
    entries = []
    for i, t in enumerate(detection.targets):
        loc = located[i] if located is not None else None
        position = covariance = None
        if located is None:
            status = STATUS_NOT_REQUESTED
        elif loc is None:
            status = STATUS_NOT_FOUND
        elif isinstance(loc, DepthInvalid):
            status = loc.reason
        else:
            status = STATUS_OK
            position = tuple(float(v) for v in loc.point)
            covariance = tuple(float(v) for v in np.asarray(loc.covariance).reshape(-1))
        second = getattr(t, "second_box", None) if t.present else None
        entries.append(TargetEntry(t.phrase, bool(t.present), float(t.score),
                                   tuple(int(v) for v in t.box) if t.present else None,
                                   position, covariance, status,
                                   tuple(int(v) for v in second) if second else None,
                                   float(getattr(t, "second_score", 0.0)) if second else 0.0))
    return FrameResult(int(stamp_ns), frame_id, detection.width, detection.height,
                       tuple(entries))
