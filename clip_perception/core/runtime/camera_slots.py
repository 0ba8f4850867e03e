"""Newest-frame mailboxes, one per camera: a new frame replaces a waiting one, never
queues behind it."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class CameraSlots(Generic[T]):
    """One one-item mailbox per camera, taken together, round-robin.

    Each camera keeps only its newest item (a replaced one is counted in
    :attr:`dropped` for that camera). :meth:`take` returns the items waiting
    in every camera, up to ``limit``, starting after the camera that was
    served first last time, so with ``limit`` below the number of cameras no
    camera waits more than ``ceil(cameras / limit)`` takes.
    """

    def __init__(self, cameras: tuple[str, ...]) -> None:
        if not cameras:
            raise ValueError("at least one camera")
        self.cameras = tuple(cameras)
        self._index = {c: i for i, c in enumerate(self.cameras)}
        self._cond = threading.Condition()
        self._items: dict[str, T | None] = dict.fromkeys(self.cameras)
        self._closed = False
        self._next = 0
        self.dropped: dict[str, int] = dict.fromkeys(self.cameras, 0)

    def put(self, camera: str, item: T) -> bool:
        """Offer ``camera``'s newest ``item``; True if it replaced (dropped) a waiting one.
        Raises KeyError for a camera not given at construction."""
        with self._cond:
            replaced = self._items[camera] is not None
            self.dropped[camera] += int(replaced)
            self._items[camera] = item
            self._cond.notify()
            return replaced

    def take(self, limit: int, timeout: float | None = None) -> list[tuple[str, T]]:
        """Wait up to ``timeout`` s for any item; then up to ``limit`` ``(camera, item)``
        pairs in round-robin order (empty on timeout or after :meth:`close`)."""
        with self._cond:
            if not self._closed and all(v is None for v in self._items.values()):
                self._cond.wait(timeout)
            n = len(self.cameras)
            taken: list[tuple[str, T]] = []
            for k in range(n):
                camera = self.cameras[(self._next + k) % n]
                item = self._items[camera]
                if item is not None and len(taken) < max(1, limit):
                    taken.append((camera, item))
                    self._items[camera] = None
            if taken:
                self._next = (self._index[taken[0][0]] + 1) % n
            return taken

    def clear(self) -> int:
        """Discard every waiting item (counted as dropped); how many there were."""
        with self._cond:
            cleared = 0
            for camera, item in self._items.items():
                if item is not None:
                    self.dropped[camera] += 1
                    self._items[camera] = None
                    cleared += 1
            return cleared

    def close(self) -> None:
        """Wake the consumer; later :meth:`take` calls return at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
