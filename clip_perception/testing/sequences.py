"""Generated RGB-D sequences at camera rate with per-frame truth, for tracking.

Each :class:`Sequence` is a table-top scene (the :mod:`.scenes` background and
palette blocks) played at ``fps`` with per-frame image and depth noise. Kinds:

* ``moving``: the target slides across the table past a still distractor;
* ``occluded``: a dark "arm" sweeps in, hides the target for ``hidden`` s
  (0.5 to 3), and leaves;
* ``leave_return``: the target slides out of view, stays out ``away`` s
  (2 to 8) and comes back;
* ``crossing``: two instances of the target phrase cross, one passing in
  front of the other;
* ``static``: nothing moves; only sensor noise changes from frame to frame.

The truth per frame is each instance's visible box (None when hidden or out
of view) and the centre of its visible face in 3D. Everything follows from
``kind``, ``seed`` and the keyword overrides, so a run repeats exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..core.spatial.camera_model import PinholeCamera
from .color_encoder import PALETTE
from .scenes import background, paint

KINDS = ("moving", "occluded", "leave_return", "crossing", "static")
OCCLUDER_RGB = (55, 55, 60)   # an arm: far from every palette colour
OCCLUDER_Z = 0.55


@dataclass
class Actor:
    """A block: its colour, size (px), depth (m) and centre over time (None: not shown)."""

    key: str
    colour: str
    size: tuple[int, int]
    z: float
    centre: Callable[[float], tuple[float, float] | None]
    target: bool = True

    def box(self, t: float, width: int, height: int):
        c = self.centre(t)
        if c is None:
            return None
        w, h = self.size
        x0, y0 = int(round(c[0] - w / 2)), int(round(c[1] - h / 2))
        box = (max(x0, 0), max(y0, 0), min(x0 + w, width), min(y0 + h, height))
        return box if box[2] - box[0] >= 4 and box[3] - box[1] >= 4 else None


@dataclass
class SequenceFrame:
    index: int
    t: float                                  # seconds from the start
    image: np.ndarray                         # (H, W, 3) uint8 RGB
    depth: np.ndarray                         # metres, float32; 0: no reading
    truth: dict[str, tuple | None]            # instance -> visible box
    points: dict[str, np.ndarray | None]      # instance -> visible face centre (m)


@dataclass
class Sequence:
    kind: str
    phrase: str
    actors: list[Actor]
    duration: float
    camera: PinholeCamera
    seed: int
    fps: float = 15.0
    width: int = 640
    height: int = 480
    params: dict = field(default_factory=dict)

    @property
    def instances(self) -> list[str]:
        return [a.key for a in self.actors if a.target]

    def __len__(self) -> int:
        return int(round(self.duration * self.fps))

    def frames(self) -> Iterator[SequenceFrame]:
        rng = np.random.default_rng(self.seed + 7919)
        base = background(rng, self.width, self.height).astype(np.int16)
        vs, us = np.mgrid[0:self.height, 0:self.width].astype(np.float32)
        rx, ry = self.camera.ray(us, vs)
        plane = (2.5 / (1.0 + 0.04 * rx - 0.1 * ry)).astype(np.float32)
        for i in range(len(self)):
            t = i / self.fps
            noise = rng.integers(-4, 5, size=base.shape, dtype=np.int16)
            image = np.clip(base + noise, 0, 255).astype(np.uint8)
            depth = plane.copy()
            owner = np.full((self.height, self.width), -1, np.int16)
            order = sorted(range(len(self.actors)), key=lambda k: -self.actors[k].z)
            for k in order:  # far to near: the nearer paints over
                a = self.actors[k]
                box = a.box(t, self.width, self.height)
                if box is None:
                    continue
                x0, y0, x1, y1 = box
                if a.colour == "occluder":
                    image[y0:y1, x0:x1] = np.clip(np.asarray(OCCLUDER_RGB) + rng.normal(
                        0, 4, (y1 - y0, x1 - x0, 3)), 0, 255).astype(np.uint8)
                else:
                    paint(image, box, a.colour, rng)
                depth[y0:y1, x0:x1] = a.z
                owner[y0:y1, x0:x1] = k
            depth = depth + rng.normal(0.0, 1.0, depth.shape).astype(np.float32) \
                * np.float32(0.0015) * depth ** 2
            depth[rng.random(depth.shape) < 0.02] = 0.0
            truth, points = {}, {}
            for k, a in enumerate(self.actors):
                if not a.target:
                    continue
                box = a.box(t, self.width, self.height)
                visible = None
                if box is not None:
                    x0, y0, x1, y1 = box
                    rows, cols = np.nonzero(owner[y0:y1, x0:x1] == k)
                    if len(rows) >= 0.1 * (x1 - x0) * (y1 - y0):
                        visible = (int(cols.min() + x0), int(rows.min() + y0),
                                   int(cols.max() + x0 + 1), int(rows.max() + y0 + 1))
                truth[a.key] = visible
                points[a.key] = None if visible is None else self.camera.backproject(
                    (visible[0] + visible[2] - 1) / 2.0, (visible[1] + visible[3] - 1) / 2.0,
                    a.z)
            yield SequenceFrame(i, t, image, depth.astype(np.float32), truth, points)


def _linear(p0, p1, t0: float, t1: float):
    def at(t: float):
        f = min(max((t - t0) / (t1 - t0), 0.0), 1.0) if t1 > t0 else 1.0
        return (p0[0] + f * (p1[0] - p0[0]), p0[1] + f * (p1[1] - p0[1]))
    return at


def make_sequence(kind: str, seed: int = 0, colour: str | None = None,
                  camera: PinholeCamera | None = None, width: int = 640, height: int = 480,
                  fps: float = 15.0, **overrides) -> Sequence:
    """A sequence of ``kind`` (see the module docstring); ``overrides`` set its parameters
    (``hidden``, ``away``, ``speed``, ``duration``, ...)."""
    if kind not in KINDS:
        raise KeyError(f"unknown sequence kind {kind!r}; choose from {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    colours = list(PALETTE)
    colour = colour or str(rng.choice(colours))
    others = [c for c in colours if c != colour]
    camera = camera or PinholeCamera(525.0, 525.0, width / 2 - 0.5, height / 2 - 0.5,
                                     width, height)
    side = int(overrides.get("side", rng.integers(70, 111)))
    size = (side, side)
    y = float(overrides.get("y", rng.uniform(0.35, 0.65) * height))
    p: dict = {"side": side}
    actors: list[Actor] = []
    distractor = Actor("distractor", str(rng.choice(others)), (90, 70), 1.3,
                       lambda t: (0.8 * width, 0.2 * height), target=False)
    if kind == "static":
        x = float(rng.uniform(0.25, 0.75) * width)
        duration = float(overrides.get("duration", 15.0))
        actors = [Actor("a", colour, size, float(overrides.get("z", 1.0)),
                        lambda t: (x, y)), distractor]
    elif kind == "moving":
        speed = float(overrides.get("speed", rng.uniform(60, 140)))
        x0, x1 = 0.12 * width, 0.88 * width
        if rng.random() < 0.5:
            x0, x1 = x1, x0
        travel = abs(x1 - x0) / speed
        duration = float(overrides.get("duration", travel + 1.5))
        dy = float(rng.uniform(-0.15, 0.15) * height)
        actors = [Actor("a", colour, size, float(rng.uniform(0.8, 1.2)),
                        _linear((x0, y), (x1, y + dy), 0.5, 0.5 + travel)), distractor]
        p["speed"] = speed
    elif kind == "occluded":
        hidden = float(overrides.get("hidden", rng.uniform(0.5, 3.0)))
        x = float(rng.uniform(0.3, 0.7) * width)
        arm = (int(side * 1.8), int(side * 1.8))
        sweep, start = 0.4, 2.5
        park = _linear((-arm[0], y), (x, y), start, start + sweep)
        leave = _linear((x, y), (width + arm[0], y), start + sweep + hidden,
                        start + 2 * sweep + hidden)

        def arm_at(t: float):
            return park(t) if t < start + sweep + hidden else leave(t)
        duration = float(overrides.get("duration", start + 2 * sweep + hidden + 3.0))
        actors = [Actor("a", colour, size, 1.0, lambda t: (x, y)), distractor,
                  Actor("arm", "occluder", arm, OCCLUDER_Z, arm_at, target=False)]
        p["hidden"] = hidden
    elif kind == "leave_return":
        away = float(overrides.get("away", rng.uniform(2.0, 8.0)))
        speed = 220.0
        x = float(rng.uniform(0.35, 0.65) * width)
        out = width + side
        t_out = 2.0 + (out - x) / speed
        t_back = t_out + away
        rest = float(rng.uniform(0.4, 0.7) * width)
        go = _linear((x, y), (out, y), 2.0, t_out)
        back = _linear((out, y), (rest, y), t_back, t_back + (out - rest) / speed)

        def at(t: float):
            if t < t_out:
                return go(t)
            if t < t_back:
                return None
            return back(t)
        duration = float(overrides.get("duration", t_back + (out - rest) / speed + 3.0))
        actors = [Actor("a", colour, size, 1.0, at), distractor]
        p["away"] = away
    else:  # crossing
        speed = float(overrides.get("speed", rng.uniform(60, 110)))
        xl, xr = 0.15 * width, 0.85 * width
        travel = (xr - xl) / speed
        offset = float(rng.uniform(0.2, 0.45) * side)
        duration = float(overrides.get("duration", travel + 1.5))
        actors = [Actor("a", colour, size, 0.9, _linear((xl, y), (xr, y), 0.5, 0.5 + travel)),
                  Actor("b", colour, size, 1.2, _linear((xr, y + offset), (xl, y + offset),
                                                         0.5, 0.5 + travel)), distractor]
        p["speed"] = speed
    return Sequence(kind, f"{colour} block", actors, duration, camera, seed, fps, width,
                    height, p)
