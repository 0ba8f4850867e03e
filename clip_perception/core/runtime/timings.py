"""Rolling per-stage timings for the node's diagnostics."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class Timings:
    """The last ``window`` durations of each named stage, in seconds."""

    def __init__(self, window: int = 2000):
        self._window = window
        self._lock = threading.Lock()
        self._samples: dict[str, deque] = {}

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._samples.setdefault(stage, deque(maxlen=self._window)).append(seconds)

    def percentiles(self, stage: str) -> tuple[float, float] | None:
        """(p50, p95) of ``stage`` in seconds, or None before its first sample."""
        with self._lock:
            values = list(self._samples.get(stage, ()))
        if not values:
            return None
        p50, p95 = np.percentile(values, [50, 95])
        return float(p50), float(p95)

    def summary(self) -> dict[str, str]:
        """``{stage}_ms_p50`` and ``{stage}_ms_p95`` for every stage seen."""
        out = {}
        for stage in sorted(self._samples):
            p = self.percentiles(stage)
            if p is not None:
                out[f"{stage}_ms_p50"] = f"{p[0] * 1e3:.1f}"
                out[f"{stage}_ms_p95"] = f"{p[1] * 1e3:.1f}"
        return out
