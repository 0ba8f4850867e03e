"""The inference loop's health, in the spirit of ROS's diagnostic_updater (no ROS here).

:class:`Health` records events with their times (frames in, results out,
errors) and judges the last ``window`` seconds only, so one bad frame is a
WARN for one window, not forever:

* ERROR: the worker thread died, or one job has run longer than ``stall_after`` s;
* WARN: no frame for ``no_frames_after`` s while running (a camera stopped),
  errors in the window, the last target update failed, or frames arrive and a
  target is set but no result came for ``window`` s;
* OK otherwise.

Levels are diagnostic_msgs/DiagnosticStatus's (OK 0, WARN 1, ERROR 2).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

OK, WARN, ERROR = 0, 1, 2
# Error kinds that mean no frame can be answered until something outside is fixed.
OUTAGE_KINDS = frozenset({"encoder_unavailable"})
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR"}


@dataclass
class HealthReport:
    """One judgement: level, a one-line message, and key/value figures."""

    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


class _Events:
    """Times of one kind of event, kept for ``window`` seconds."""

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.last: float | None = None

    def add(self, now: float, window: float) -> None:
        self.times.append(now)
        self.last = now
        self.prune(now - window)  # bounded even if nobody asks for a report

    def prune(self, since: float) -> int:
        while self.times and self.times[0] < since:
            self.times.popleft()
        return len(self.times)


class Health:
    """Windowed rates, staleness and errors of the loop; thread-safe."""

    def __init__(self, window: float = 10.0, stall_after: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 no_frames_after: float | None = None):
        if window <= 0 or stall_after <= 0:
            raise ValueError("window and stall_after must be positive")
        self.window = window
        self.no_frames_after = no_frames_after  # None or 0: never warn about missing frames
        self.stall_after = stall_after
        self._clock = clock
        self._lock = threading.Lock()
        self._inputs = _Events()
        self._results = _Events()
        self._errors = _Events()
        self._error_kinds: deque[tuple[float, str]] = deque()
        self._started: float | None = None
        self.target_error: str | None = None
        self.model_error: str | None = None  # the model is not loaded yet: why

    def started(self) -> None:
        """The loop (re)started: rates and staleness count from now."""
        with self._lock:
            self._started = self._clock()
            self._inputs, self._results = _Events(), _Events()

    def input(self) -> None:
        with self._lock:
            self._inputs.add(self._clock(), self.window)

    def result(self) -> None:
        with self._lock:
            self._results.add(self._clock(), self.window)

    def error(self, kind: str) -> None:
        with self._lock:
            now = self._clock()
            self._errors.add(now, self.window)
            self._error_kinds.append((now, kind))
            while self._error_kinds and self._error_kinds[0][0] < now - self.window:
                self._error_kinds.popleft()

    def report(self, *, running: bool, worker_alive: bool, busy_for: float | None,
               has_target: bool) -> HealthReport:
        """Judge the last window; the caller says whether the worker runs and for how
        long its current job has been running (None when idle)."""
        with self._lock:
            now = self._clock()
            since = now - self.window
            inputs = self._inputs.prune(since)
            results = self._results.prune(since)
            errors = self._errors.prune(since)
            while self._error_kinds and self._error_kinds[0][0] < since:
                self._error_kinds.popleft()
            kinds = sorted({k for _, k in self._error_kinds})
            span = min(self.window, now - self._started) if self._started is not None else 0.0
            last_result = self._results.last
            last_input = self._inputs.last
            started = self._started
        span = max(span, 1e-9)
        age = None if last_result is None else now - last_result
        values = {
            "input_rate_hz": f"{inputs / span:.2f}" if started is not None else "0.00",
            "processing_rate_hz": f"{results / span:.2f}" if started is not None else "0.00",
            "seconds_since_last_result": "never" if age is None else f"{age:.1f}",
            "errors_in_window": str(errors),
            "window_s": f"{self.window:g}",
            "worker": ("not running" if not running else "alive" if worker_alive else "dead"),
        }
        if kinds:
            values["error_kinds_in_window"] = ", ".join(kinds)
        if self.target_error:
            values["target_error"] = self.target_error
        if self.model_error:
            values["model_error"] = self.model_error
            return HealthReport(ERROR, f"no model yet: {self.model_error}", values)
        if running and not worker_alive:
            return HealthReport(ERROR, "worker thread died: no more results", values)
        if running and busy_for is not None and busy_for > self.stall_after:
            return HealthReport(ERROR, f"worker stalled: one frame has taken "
                                       f"{busy_for:.0f} s", values)
        if OUTAGE_KINDS.intersection(kinds):
            return HealthReport(ERROR, f"encoder unavailable: {errors} errors in the last "
                                       f"{self.window:g} s ({', '.join(kinds)})", values)
        quiet = (now - max(started, last_input or started)) if started is not None else 0.0
        if running and self.no_frames_after and quiet > self.no_frames_after:
            return HealthReport(WARN, f"no frames for {quiet:.0f} s", values)
        if self.target_error:
            return HealthReport(WARN, f"target update failed, old target kept: "
                                      f"{self.target_error}", values)
        if errors:
            return HealthReport(WARN, f"{errors} errors in the last {self.window:g} s "
                                      f"({', '.join(kinds)})", values)
        waited = (now - max(started, last_result or started)) if started is not None else 0.0
        if running and has_target and inputs and waited > self.window:
            return HealthReport(WARN, f"frames arrive but no result for {waited:.0f} s", values)
        return HealthReport(OK, "ok", values)
