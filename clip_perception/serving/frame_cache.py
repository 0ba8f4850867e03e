"""The server's memory of recent frames (see :mod:`..core.triton_protocol`): each
frame crosses the network once, and a detector's later passes over it send only ids.

A bounded LRU: at most ``max_frames`` frames and ``max_bytes`` bytes. Thread-safe,
so one cache serves every client of a model instance.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

Key = tuple[int, int]  # (client id, frame id)


class FrameCache:
    """Recent uint8 frames by ``(client id, frame id)``, least recently used out first."""

    def __init__(self, max_frames: int = 64, max_bytes: int = 256 * 2**20):
        if max_frames < 0 or max_bytes < 0:
            raise ValueError("max_frames and max_bytes must be >= 0")
        self.max_frames, self.max_bytes = int(max_frames), int(max_bytes)
        self._frames: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # counters, for tests and logs
        self.received = 0  # frames that came with a request (stored or not)
        self.received_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evicted = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def put(self, key: Key, frame: np.ndarray) -> np.ndarray:
        """Keep a copy of ``frame`` (the request's buffer may be reused after the call)
        under ``key``, evicting the least recently used frames past the bounds; returns
        the copy. A frame larger than ``max_bytes`` is not kept."""
        copy = np.array(frame, dtype=np.uint8, copy=True)
        copy.flags.writeable = False  # shared by concurrent requests: read only
        with self._lock:
            self.received += 1
            self.received_bytes += copy.nbytes
            old = self._frames.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if copy.nbytes > self.max_bytes or self.max_frames == 0:
                return copy
            self._frames[key] = copy
            self._bytes += copy.nbytes
            while len(self._frames) > self.max_frames or self._bytes > self.max_bytes:
                _, gone = self._frames.popitem(last=False)
                self._bytes -= gone.nbytes
                self.evicted += 1
        return copy

    def get(self, key: Key) -> np.ndarray | None:
        """The frame kept under ``key`` (now the most recently used), or None."""
        with self._lock:
            frame = self._frames.get(key)
            if frame is None:
                self.misses += 1
                return None
            self._frames.move_to_end(key)
            self.hits += 1
            return frame

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0
