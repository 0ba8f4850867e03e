"""A one-item mailbox: the newest frame replaces a waiting one, never queues behind it."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item between a producer and a consumer thread.

    :meth:`put` replaces an item the consumer has not taken yet and counts it
    as dropped, so latency never grows with the input rate.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Offer ``item``; returns True if it replaced (dropped) a waiting one."""
        with self._cond:
            replaced = self._item is not None
            self.dropped += int(replaced)
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """Wait up to ``timeout`` s for an item; None on timeout or after :meth:`close`."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> bool:
        """Discard a waiting item (counted as dropped); True if there was one."""
        with self._cond:
            had = self._item is not None
            self.dropped += int(had)
            self._item = None
            return had

    def close(self) -> None:
        """Wake the consumer; later :meth:`take` calls return at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
