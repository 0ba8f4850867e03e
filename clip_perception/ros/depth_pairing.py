"""Colour/depth pairing on message_filters where it is installed.

:class:`MessageFiltersPairer` lets message_filters.ApproximateTimeSynchronizer
decide the pairs and keeps :class:`~clip_perception.core.spatial.stamp_pairing.StampPairer`'s
contract (a colour frame that cannot be paired is handed on with ``None``).
:func:`make_pairer` picks it where ``message_filters`` imports, and the
ROS-free :class:`StampPairer`, with the same pairing rule, otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..core.spatial.stamp_pairing import OnPair, StampPairer


class MessageFiltersPairer(StampPairer):
    """The same contract on message_filters.ApproximateTimeSynchronizer.

    The synchronizer decides the pairs; this class adds the release of colour
    frames that cannot be paired, and ignores a pair whose colour frame was
    already released. ``stamp_of(msg)`` gives a message's stamp in ns; the
    synchronizer reads ``msg.header.stamp`` itself.
    """

    def __init__(self, on_pair: OnPair, tolerance_ns: int, queue_size: int = 10,
                 max_wait: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 message_filters=None):
        super().__init__(on_pair, tolerance_ns, queue_size, max_wait, clock)
        if message_filters is None:
            import message_filters
        mf = message_filters
        self._inputs = (mf.SimpleFilter(), mf.SimpleFilter())
        self._sync = mf.ApproximateTimeSynchronizer(list(self._inputs), queue_size,
                                                    tolerance_ns / 1e9)
        self._sync.registerCallback(self._synced)
        self._keys: dict[int, int] = {}  # id(colour msg) -> its arrival key while it waits

    def _synced(self, colour, depth) -> None:
        with self._lock:
            key = self._keys.pop(id(colour), None)
            if key is None or self._colour.pop(key, None) is None:
                return  # already handed on without depth
        self._emit([(colour, depth)])

    def add_colour(self, stamp_ns: int, msg) -> None:
        with self._lock:
            key = next(self._seq)
            self._colour[key] = (stamp_ns, msg, self.clock())
            self._keys[id(msg)] = key
            out = self._evict(self._colour) + self._stale()
        self._emit(out)
        self._inputs[0].signalMessage(msg)

    def add_depth(self, stamp_ns: int, msg) -> None:
        self._inputs[1].signalMessage(msg)
        with self._lock:
            out = self._expired(stamp_ns) + self._stale()
        self._emit(out)

    def _emit(self, pairs) -> None:
        for colour, _ in pairs:
            self._keys.pop(id(colour), None)
        super()._emit(pairs)


def make_pairer(on_pair: OnPair, tolerance_ns: int, queue_size: int = 10,
                max_wait: float = 0.5) -> StampPairer:
    """message_filters' synchronizer where importable, else :class:`StampPairer`."""
    try:
        import message_filters
    except ImportError:
        return StampPairer(on_pair, tolerance_ns, queue_size, max_wait)
    return MessageFiltersPairer(on_pair, tolerance_ns, queue_size, max_wait,
                                message_filters=message_filters)
