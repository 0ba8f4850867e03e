"""Throttle repeated warnings per kind of problem, and count every occurrence."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

OVERFLOW_KIND = "other"  # where kinds beyond ``max_kinds`` are counted


class ProblemLog:
    """Logs the first occurrence of each problem kind at once, then at most
    every ``period`` seconds with the number suppressed in between.

    ``counts`` keeps every occurrence, so nothing disappears without a trace.
    Kinds often carry what came off the wire (an encoding, a size); past
    ``max_kinds`` distinct kinds, new ones are throttled and counted together
    under :data:`OVERFLOW_KIND`, so a stream of ever-different bad input
    cannot grow the tables or flood the log.
    """

    def __init__(self, emit: Callable[[str], None], period: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, max_kinds: int = 64):
        self._emit = emit
        self._period = period
        self._max_kinds = max_kinds
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def report(self, kind: str, message: str) -> bool:
        """Record one ``kind`` problem; returns True if it was logged now."""
        with self._lock:
            if kind not in self.counts and len(self.counts) >= self._max_kinds:
                kind = OVERFLOW_KIND
            self.counts[kind] += 1
            now = self._clock()
            last = self._last.get(kind)
            if last is not None and now - last < self._period:
                self._suppressed[kind] += 1
                return False
            suppressed = self._suppressed.pop(kind, 0)
            self._last[kind] = now
        if suppressed:
            message += f" ({suppressed} more like this in the last {now - last:.0f} s)"
        self._emit(message)
        return True
