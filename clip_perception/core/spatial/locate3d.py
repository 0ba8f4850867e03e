"""A 2D region plus registered depth to a 3D position with its covariance.

No ROS import. :class:`RgbdFrame` carries a colour frame with its depth and
intrinsics through the loop; :func:`locate_targets` and :func:`frame_result`
turn a frame's :class:`~..detect.results.Detection` into positions and the
``result`` document. The position is the centre of the object's **visible
surface** in the camera's optical frame (x right, y down, z forward, metres):

1. The depth pixels under the region (depth may be the colour image scaled
   by any factor, same field of view) that are finite, > 0 and inside
   ``depth_range`` are the valid ones. Too few (under ``MIN_VALID_SHARE`` of
   the region, or under ``MIN_VALID_PIXELS``) gives a :class:`DepthInvalid`
   with a reason, never a point.
2. Each valid pixel is weighted by the target's heatmap at that pixel (plus a
   floor), so pixels the model attributes to the object count most.
3. Background rejection: the weighted histogram of log-depth (bins of 1%
   of the distance) splits into surfaces, runs of occupied bins. The nearest
   surface holding at least ``SURFACE_SHARE`` of the weight is the object:
   a region around an object also catches what lies behind it, rarely what
   lies in front. Its pixels are the inliers.
4. A region that cuts the object: where the inliers touch the region's
   border, pixels up to ``GROW`` x the region's size beyond it that lie on
   the same surface (within its depth band, 8-connected to the inliers) join
   them, so the centroid is the whole visible face's, not the cut part's.
5. Depth: the weighted median of the inliers' depths. x, y: the mean ray of
   the inlier pixels times that depth, i.e. the visible surface's centroid.

Covariance (3x3, m^2): first-order propagation of independent pixel and depth
uncertainties through the back-projection p = ((u-cx) z/fx, (v-cy) z/fy, z):
sigma_u = ``BOX_CENTRE_SIGMA`` x the region's width (and likewise v with its
height), sigma_z = the inliers' robust depth spread (1.4826 x weighted MAD),
at least ``DEPTH_SIGMA_FLOOR`` x z and 2 mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..detect.results import Detection
from ..io.image_formats import Frame
from ..io.result_json import (
    STATUS_NOT_FOUND,
    STATUS_NOT_REQUESTED,
    STATUS_OK,
    FrameResult,
    TargetEntry,
)
from .camera_model import PinholeCamera

GROW = 0.25
MIN_VALID_PIXELS = 10
MIN_VALID_SHARE = 0.05
SURFACE_SHARE = 0.2
BIN_RELATIVE = 0.01
HEAT_FLOOR = 0.05
BOX_CENTRE_SIGMA = 0.1
DEPTH_SIGMA_FLOOR = 0.005
MIN_DEPTH_SIGMA = 0.002
ASPECT_TOLERANCE = 0.01

# Reasons a frame gets no 3D position (counted per reason in /diagnostics).
REASON_NO_DEPTH = "depth_missing"            # no depth frame paired within the tolerance
REASON_NO_CAMERA_INFO = "camera_info_missing"
REASON_CAMERA_INFO = "camera_info_invalid"   # zero focal length, bad size
REASON_DEPTH_FORMAT = "depth_format"         # unsupported encoding, bad buffer
REASON_SIZE = "depth_size_mismatch"          # depth is not the colour image, scaled
REASON_ZERO = "depth_zero"
REASON_NAN = "depth_nan"
REASON_RANGE = "depth_out_of_range"
REASON_EMPTY = "region_empty"
REASONS = (REASON_NO_DEPTH, REASON_NO_CAMERA_INFO, REASON_CAMERA_INFO, REASON_DEPTH_FORMAT,
           REASON_SIZE, REASON_ZERO, REASON_NAN, REASON_RANGE, REASON_EMPTY)


@dataclass(frozen=True)
class DepthInvalid:
    """No position for this target in this frame, and why."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Position3D:
    """A target's visible-surface centre in the optical frame (metres).

    ``covariance`` is 3x3 (m^2); ``size`` is an extent (x, y, z) for markers:
    the region's width and height at the object's depth and the inliers'
    depth spread (5th to 95th percentile, at least 1 cm).
    """

    point: np.ndarray
    covariance: np.ndarray
    size: np.ndarray
    valid_pixels: int
    inlier_pixels: int


def _same_aspect(w0: int, h0: int, w1: int, h1: int) -> bool:
    return abs(w1 / w0 - h1 / h0) <= ASPECT_TOLERANCE * max(w1 / w0, h1 / h0)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _front_surface(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mask of the pixels on the nearest surface holding >= SURFACE_SHARE of the weight."""
    logz = np.log(z)
    step = np.log1p(BIN_RELATIVE)
    bins = np.floor((logz - logz.min()) / step).astype(int)
    mass = np.bincount(bins, weights=w)
    occupied = mass > 0.002 * mass.sum()  # a few flying pixels do not bridge two surfaces
    # Surfaces: runs of occupied bins, a single empty bin allowed inside a run.
    labels = np.full(len(mass), -1)
    current, gap = -1, 2
    for i, occ in enumerate(occupied):
        if occ:
            if gap > 1:
                current += 1
            labels[i] = current
            gap = 0
        else:
            gap += 1
    shares = np.array([mass[labels == k].sum() for k in range(current + 1)]) / mass.sum()
    candidates = np.flatnonzero(shares >= SURFACE_SHARE)
    chosen = candidates[0] if len(candidates) else int(np.argmax(shares))
    return labels[bins] == chosen


def _grown_surface(depth: np.ndarray, valid: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                   region: tuple[int, int, int, int], band: tuple[float, float],
                   low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Depth-pixel (cols, rows) of the object's surface, grown past a region that cuts it.

    Returns the inliers unchanged when they do not touch the region's border.
    """
    c0, r0, c1, r1 = region
    touches = (cols.min() == c0 and c0 > 0) or (rows.min() == r0 and r0 > 0) or \
        (cols.max() == c1 - 1 and c1 < depth.shape[1]) or \
        (rows.max() == r1 - 1 and r1 < depth.shape[0])
    if not touches:
        return cols, rows
    import cv2

    gx, gy = int(np.ceil(GROW * (c1 - c0))), int(np.ceil(GROW * (r1 - r0)))
    e0, e1 = max(c0 - gx, 0), min(c1 + gx, depth.shape[1])
    f0, f1 = max(r0 - gy, 0), min(r1 + gy, depth.shape[0])
    patch = np.asarray(depth[f0:f1, e0:e1], dtype=np.float64)
    zmin, zmax = band
    margin = BIN_RELATIVE * zmax
    with np.errstate(invalid="ignore"):
        same = np.isfinite(patch) & (patch >= max(zmin - margin, low)) & \
            (patch <= min(zmax + margin, high))
    seed = np.zeros_like(same)
    seed[rows - f0, cols - e0] = True
    same |= seed
    # Close one-pixel holes (missing readings) so they do not split the surface.
    mask = cv2.morphologyEx(same.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    count, labels = cv2.connectedComponents(mask, connectivity=8)
    keep = np.unique(labels[seed])
    keep = keep[keep > 0]
    grown = np.isin(labels, keep) & same
    gr, gc = np.nonzero(grown)
    return gc + e0, gr + f0


def locate(depth: np.ndarray, box: Sequence[int], colour_size: tuple[int, int],
           camera: PinholeCamera, depth_range: tuple[float, float] = (0.1, 10.0),
           heat: np.ndarray | None = None, heat_cell: int = 1) -> Position3D | DepthInvalid:
    """The 3D position of the object in ``box`` (colour pixels, x1/y1 exclusive).

    ``depth``: metres, ``(Hd, Wd)``, NaN or 0 where there is no reading.
    ``colour_size``: (width, height) of the colour image the box refers to.
    ``camera``: the colour camera's intrinsics (at any resolution of the same
    field of view). ``heat``: the target's heatmap, one value per
    ``heat_cell`` x ``heat_cell`` colour pixels, or None for equal weights.
    """
    width, height = colour_size
    dh, dw = depth.shape
    if not _same_aspect(width, height, dw, dh):
        return DepthInvalid(REASON_SIZE, f"depth {dw}x{dh} is not the {width}x{height} colour "
                                         "image scaled (register depth to colour)")
    if not _same_aspect(width, height, camera.width, camera.height):
        return DepthInvalid(REASON_CAMERA_INFO, f"camera_info is {camera.width}x"
                                                f"{camera.height}, colour {width}x{height}")
    sx, sy = dw / width, dh / height
    x0, y0, x1, y1 = (float(v) for v in box)
    c0, c1 = int(np.clip(np.floor(x0 * sx), 0, dw)), int(np.clip(np.ceil(x1 * sx), 0, dw))
    r0, r1 = int(np.clip(np.floor(y0 * sy), 0, dh)), int(np.clip(np.ceil(y1 * sy), 0, dh))
    if c1 <= c0 or r1 <= r0:
        return DepthInvalid(REASON_EMPTY, f"region {tuple(box)} covers no depth pixel")
    patch = np.asarray(depth[r0:r1, c0:c1], dtype=np.float64)
    finite = np.isfinite(patch)
    nonzero = finite & (patch > 0)
    low, high = depth_range
    valid = nonzero & (patch >= low) & (patch <= high)
    n_valid = int(valid.sum())
    if n_valid < max(MIN_VALID_PIXELS, MIN_VALID_SHARE * patch.size):
        counts = {REASON_NAN: int((~finite).sum()), REASON_ZERO: int((finite & ~nonzero).sum()),
                  REASON_RANGE: int((nonzero & ~valid).sum())}
        reason = max(counts, key=counts.get)
        return DepthInvalid(reason, f"{n_valid} of {patch.size} depth pixels in the region are "
                                    f"valid ({counts[REASON_NAN]} NaN, {counts[REASON_ZERO]} zero,"
                                    f" {counts[REASON_RANGE]} outside {low}-{high} m)")
    rows, cols = np.nonzero(valid)
    z = patch[rows, cols]
    u = (cols + c0 + 0.5) / sx - 0.5  # pixel centres, colour pixel coordinates
    v = (rows + r0 + 0.5) / sy - 0.5
    if heat is not None:
        hr = np.clip(((v + 0.5) / heat_cell).astype(int), 0, heat.shape[0] - 1)
        hc = np.clip(((u + 0.5) / heat_cell).astype(int), 0, heat.shape[1] - 1)
        h = np.clip(np.asarray(heat, np.float64)[hr, hc], 0.0, None)
        w = h + HEAT_FLOOR * max(float(h.max()), 1e-6)
    else:
        w = np.ones_like(z)
    inliers = _front_surface(z, w)
    zi, wi = z[inliers], w[inliers]
    zc = _weighted_median(zi, wi)
    su_px, sv_px = _grown_surface(depth, valid, rows[inliers] + r0, cols[inliers] + c0,
                                  (c0, r0, c1, r1), (float(zi.min()), float(zi.max())), low,
                                  high)
    u_in = (su_px + 0.5) / sx - 0.5
    v_in = (sv_px + 0.5) / sy - 0.5
    uc, vc = float(u_in.mean()), float(v_in.mean())
    colour_cam = camera.scaled(width, height)
    rx, ry = colour_cam.ray(u_in, v_in)
    point = np.array([float(rx.mean()) * zc, float(ry.mean()) * zc, zc])

    mad = _weighted_median(np.abs(zi - zc), wi)
    sz = max(1.4826 * mad, DEPTH_SIGMA_FLOOR * zc, MIN_DEPTH_SIGMA)
    su = max(BOX_CENTRE_SIGMA * (x1 - x0), 1.0)
    sv = max(BOX_CENTRE_SIGMA * (y1 - y0), 1.0)
    fx, fy, cx, cy = colour_cam.fx, colour_cam.fy, colour_cam.cx, colour_cam.cy
    jac = np.array([[zc / fx, 0.0, (uc - cx) / fx],
                    [0.0, zc / fy, (vc - cy) / fy],
                    [0.0, 0.0, 1.0]])
    covariance = jac @ np.diag([su ** 2, sv ** 2, sz ** 2]) @ jac.T
    p5, p95 = np.percentile(zi, [5, 95])
    size = np.array([(x1 - x0) * zc / fx, (y1 - y0) * zc / fy, max(float(p95 - p5), 0.01)])
    return Position3D(point, covariance, size, n_valid, int(inliers.sum()))


# --- a frame with its depth, and the per-frame glue -------------------------------
@dataclass(frozen=True)
class RgbdFrame(Frame):
    """``depth`` in metres (NaN/0 = no reading) or None; ``missing`` says why when
    ``depth`` or ``camera`` is None."""

    depth: np.ndarray | None = None
    camera: PinholeCamera | None = None
    missing: DepthInvalid | None = None

    @classmethod
    def wrap(cls, frame: Frame, depth=None, camera=None, missing=None) -> RgbdFrame:
        return cls(frame.pixels, frame.order, depth, camera, missing)


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
