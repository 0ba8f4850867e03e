"""Pair each colour frame with the depth frame nearest in stamp, within a tolerance.

No ROS import. The pairing rule is message_filters.ApproximateTimeSynchronizer's
for two inputs (its Python implementation): when a message arrives, the other
input's queue is searched for stamps within ``tolerance`` of it, the nearest
is taken, and both leave their queues; each queue keeps ``queue_size``
messages. :func:`clip_perception.ros.depth_pairing.make_pairer` uses message_filters
itself where it is importable (a ROS install) and :class:`StampPairer` otherwise.

Unlike a bare synchronizer, a colour frame is never silently lost: one that
can no longer be paired is handed on with ``depth=None`` (then no 3D result
is made for it and the reason is counted). That happens when a depth frame
newer than its stamp + tolerance arrives, when it has waited ``max_wait``
seconds (wall clock) for depth, or when its queue overflows.

Waiting frames are kept in arrival order, not keyed by stamp: drivers and
simulators that stamp 0 or repeat a stamp exist, and each of their frames is
paired or handed on once. Among equally near depth frames the earliest wins.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

OnPair = Callable[[object, object | None], None]


class StampPairer:
    """Two-stream nearest-stamp pairing with ApproximateTimeSynchronizer's semantics.

    ``on_pair(colour, depth_or_None)`` is called from whichever thread adds
    the message that completes or releases a pair. Stamps are integer ns.
    """

    def __init__(self, on_pair: OnPair, tolerance_ns: int, queue_size: int = 10,
                 max_wait: float = 0.5, clock: Callable[[], float] = time.monotonic):
        if tolerance_ns < 0 or queue_size < 1:
            raise ValueError("tolerance must be >= 0 and queue_size >= 1")
        self.on_pair = on_pair
        self.tolerance_ns = int(tolerance_ns)
        self.queue_size = queue_size
        self.max_wait = max_wait
        self.clock = clock
        self._lock = threading.Lock()
        self._seq = itertools.count()  # arrival order: the key of every waiting message
        self._colour: OrderedDict[int, tuple[int, object, float]] = OrderedDict()  # stamp, msg, t
        self._depth: OrderedDict[int, tuple[int, object]] = OrderedDict()  # stamp, msg
        self.paired = 0
        self.unpaired = 0

    def _nearest(self, queue, stamp: int) -> int | None:
        """The arrival key of the waiting message nearest ``stamp`` within the tolerance."""
        best, best_delta = None, None
        for key, entry in queue.items():
            delta = abs(entry[0] - stamp)
            if delta <= self.tolerance_ns and (best_delta is None or delta < best_delta):
                best, best_delta = key, delta
        return best

    def _expired(self, stamp_ns: int) -> list:
        """Colour frames older than a depth stamp - tolerance: they can no longer pair."""
        old = [k for k, (s, _, _) in self._colour.items() if s + self.tolerance_ns < stamp_ns]
        return [(self._colour.pop(k)[1], None) for k in old]

    def add_colour(self, stamp_ns: int, msg) -> None:
        with self._lock:
            match = self._nearest(self._depth, stamp_ns)
            if match is not None:
                out = [(msg, self._depth.pop(match)[1])]
            else:
                self._colour[next(self._seq)] = (stamp_ns, msg, self.clock())
                out = self._evict(self._colour)
            out += self._stale()
        self._emit(out)

    def add_depth(self, stamp_ns: int, msg) -> None:
        with self._lock:
            match = self._nearest(self._colour, stamp_ns)
            out = []
            if match is not None:
                out.append((self._colour.pop(match)[1], msg))
            else:
                self._depth[next(self._seq)] = (stamp_ns, msg)
                while len(self._depth) > self.queue_size:
                    self._depth.popitem(last=False)
            out += self._expired(stamp_ns)
            out += self._stale()
        self._emit(out)

    def poll(self) -> None:
        """Release colour frames that waited longer than ``max_wait`` (call periodically)."""
        with self._lock:
            out = self._stale()
        self._emit(out)

    def pending(self) -> int:
        return len(self._colour)

    def _evict(self, queue) -> list:
        out = []
        while len(queue) > self.queue_size:
            out.append((queue.popitem(last=False)[1][1], None))
        return out

    def _stale(self) -> list:
        now = self.clock()
        old = [k for k, (_, _, t) in self._colour.items() if now - t > self.max_wait]
        return [(self._colour.pop(k)[1], None) for k in old]

    def _emit(self, pairs) -> None:
        for colour, depth in pairs:
            if depth is None:
                self.unpaired += 1
            else:
                self.paired += 1
            self.on_pair(colour, depth)
