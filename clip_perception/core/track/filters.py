"""Kalman filters of a track's position: 3D (metres, with the measured covariance) and
the 2D box (pixels). Both are constant-velocity filters with white-acceleration noise,
so a still object settles to a still estimate and a moving one is followed without lag
growing with time.

The 3D filter assumes a still or steadily moving object (:data:`ACCELERATION_STILL`)
and so averages the measurement noise away; a measurement it cannot explain so
(normalised innovation beyond :data:`MANEUVER`) is taken as the object being moved:
the filter restarts at that measurement, so a moved object is followed at once
instead of lagging while a still model catches up. A measurement farther from the estimate
than :data:`MAX_SPEED` times the time since, plus :data:`GATE_SIGMAS` standard
deviations, is a jump: another object (:meth:`Kalman3D.jump`).
"""

from __future__ import annotations

import numpy as np

ACCELERATION_3D = 1.0   # m/s^2: an object being moved (gate, manoeuvre steps)
ACCELERATION_STILL = 0.003  # m/s^2: a still or steadily moving object
MANEUVER = 16.27        # chi-square, 3 dof, 99.9%: beyond it the object is being moved
ACCELERATION_2D = 0.6   # box sizes per s^2
BOX_SIGMA = 0.04        # box-centre measurement noise, times the box size
SIZE_SIGMA = 0.06       # box width/height measurement noise, relative
MAX_SPEED = 1.0         # m/s: an object moves at most this fast (a hand, an arm)...
GATE_SIGMAS = 3.0       # ...plus this many standard deviations of the position


def _cv_matrices(dt: float, dims: int, accel: float) -> tuple[np.ndarray, np.ndarray]:
    f = np.eye(2 * dims)
    f[:dims, dims:] = np.eye(dims) * dt
    g = np.concatenate([np.eye(dims) * dt**2 / 2, np.eye(dims) * dt])
    return f, g @ g.T * accel**2


class Kalman3D:
    """Constant-velocity filter of a 3D point, measured with its own covariance."""

    def __init__(self, point: np.ndarray, covariance: np.ndarray, t: float):
        self.x = np.concatenate([np.asarray(point, float), np.zeros(3)])
        self.p = np.zeros((6, 6))
        self.p[:3, :3] = np.asarray(covariance, float)
        self.p[3:, 3:] = np.eye(3) * 0.05**2  # an object starts still, give or take 5 cm/s
        self.t = float(t)

    def predicted(self, t: float, accel: float = ACCELERATION_3D
                  ) -> tuple[np.ndarray, np.ndarray]:
        dt = max(float(t) - self.t, 0.0)
        f, q = _cv_matrices(dt, 3, accel)
        return f @ self.x, f @ self.p @ f.T + q

    def mahalanobis2(self, point: np.ndarray, covariance: np.ndarray, t: float,
                     accel: float = ACCELERATION_3D) -> float:
        """Squared Mahalanobis distance of a measurement to the prediction at ``t``."""
        x, p = self.predicted(t, accel)
        s = p[:3, :3] + np.asarray(covariance, float)
        r = np.asarray(point, float) - x[:3]
        return float(r @ np.linalg.solve(s, r))

    def jump(self, point: np.ndarray, covariance: np.ndarray, t: float) -> bool:
        """True when ``point`` at ``t`` is farther from the estimate than the object can
        have moved since (:data:`MAX_SPEED`) plus :data:`GATE_SIGMAS` sigmas of both."""
        dt = max(float(t) - self.t, 0.0)
        spread = np.linalg.eigvalsh(self.p[:3, :3] + np.asarray(covariance, float)).max()
        allowed = MAX_SPEED * dt + GATE_SIGMAS * float(np.sqrt(max(spread, 0.0)))
        return float(np.linalg.norm(np.asarray(point, float) - self.x[:3])) > allowed

    def update(self, point: np.ndarray, covariance: np.ndarray, t: float) -> None:
        if self.mahalanobis2(point, covariance, t, ACCELERATION_STILL) > MANEUVER:
            self._restart(point, covariance, t)
            return
        x, p = self.predicted(t, ACCELERATION_STILL)
        h = np.zeros((3, 6))
        h[:, :3] = np.eye(3)
        s = p[:3, :3] + np.asarray(covariance, float)
        k = p[:, :3] @ np.linalg.inv(s)
        self.x = x + k @ (np.asarray(point, float) - x[:3])
        self.p = (np.eye(6) - k @ h) @ p
        self.p = (self.p + self.p.T) / 2
        self.t = max(self.t, float(t))

    def _restart(self, point: np.ndarray, covariance: np.ndarray, t: float) -> None:
        """The object was moved: start again at the measurement, as a new still object
        (a step's velocity would carry the estimate past an object that stops)."""
        t0 = self.t
        self.__init__(point, covariance, t)
        self.t = max(t0, float(t))

    @property
    def point(self) -> np.ndarray:
        return self.x[:3].copy()

    @property
    def covariance(self) -> np.ndarray:
        return self.p[:3, :3].copy()


class BoxFilter:
    """Constant-velocity filter of a box centre, constant-size filter of its width and
    height; noise in units of the box's size, so it behaves alike at any resolution."""

    def __init__(self, box, t: float):
        cx, cy, w, h = _cwh(box)
        self.x = np.array([cx, cy, 0.0, 0.0])
        s = np.sqrt(w * h)
        self.p = np.diag([(BOX_SIGMA * s) ** 2] * 2 + [(0.5 * s) ** 2] * 2)
        self.size = np.array([w, h], float)
        self.t = float(t)

    def predicted(self, t: float, horizon: float = 1.0) -> tuple[float, float, float, float]:
        """The box at ``t``; motion is extrapolated at most ``horizon`` s past the last update."""
        dt = min(max(float(t) - self.t, 0.0), horizon)
        cx, cy = self.x[:2] + self.x[2:] * dt
        w, h = self.size
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)

    def update(self, box, t: float) -> None:
        cx, cy, w, h = _cwh(box)
        dt = max(float(t) - self.t, 0.0)
        s = np.sqrt(self.size[0] * self.size[1])
        f, q = _cv_matrices(dt, 2, ACCELERATION_2D * s)
        x, p = f @ self.x, f @ self.p @ f.T + q
        r = np.eye(2) * (BOX_SIGMA * s) ** 2
        sm = p[:2, :2] + r
        k = p[:, :2] @ np.linalg.inv(sm)
        self.x = x + k @ (np.array([cx, cy]) - x[:2])
        self.p = p - k @ p[:2, :]
        # size: a fixed-gain average (sizes change slowly)
        self.size = self.size + 0.4 * (np.array([w, h]) - self.size)
        self.t = max(self.t, float(t))

    def shift(self, dx: float, dy: float, scale: float, t: float) -> None:
        """Move the box by a measured image motion (optical flow), keeping its velocity."""
        self.x[:2] += (dx, dy)
        self.size = self.size * scale
        self.t = max(self.t, float(t))


def _cwh(box) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 1.0), max(y1 - y0, 1.0)
