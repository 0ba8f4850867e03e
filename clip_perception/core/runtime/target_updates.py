"""Model-side changes (new targets, new detector settings) on a thread of their own.

Embedding a new target's text can take long: a remote text encoder is a
network call with a timeout of many seconds. Run on the thread that handles
commands (a ROS executor), it would stop everything else that thread does.
:class:`BackgroundUpdates` takes each change at once and runs it on one
background thread, in order; a change still waiting when a newer one of the
same kind arrives is replaced by it (only the newest command matters).

No ROS import: the node submits callables and they report their own outcome.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

_log = logging.getLogger(__name__)


class BackgroundUpdates:
    """A serial queue of jobs keyed by kind; a newer job of a waiting kind replaces it.

    Args:
        report: ``report(kind, message)`` for a job that raised (the thread goes on).
        name: the thread's name.
    """

    def __init__(self, report: Callable[[str, str], None] | None = None,
                 name: str = "clip_perception_updates"):
        self._report = report or (lambda kind, message: _log.warning(message))
        self._name = name
        self._cond = threading.Condition()
        self._pending: OrderedDict[str, Callable[[], None]] = OrderedDict()
        self._running: str | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self.superseded = 0  # jobs replaced by a newer one before they ran

    def submit(self, kind: str, job: Callable[[], None]) -> None:
        """Queue ``job``; returns at once. Ignored after :meth:`close`."""
        with self._cond:
            if self._closed:
                return
            if self._pending.pop(kind, None) is not None:
                self.superseded += 1
            self._pending[kind] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def pending(self, kind: str | None = None) -> bool:
        """True while a job (of ``kind``) waits or runs."""
        with self._cond:
            if kind is None:
                return bool(self._pending) or self._running is not None
            return kind in self._pending or self._running == kind

    def waiting(self, kind: str) -> bool:
        """True if a job of ``kind`` waits (not counting one that runs)."""
        with self._cond:
            return kind in self._pending

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job waits or runs; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._pending and self._running is None, timeout)

    def close(self, timeout: float = 1.0) -> bool:
        """Drop waiting jobs and stop the thread; True if it ended within ``timeout``
        (a job stuck in a network call is left to its daemon thread)."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                kind, job = self._pending.popitem(last=False)
                self._running = kind
            try:
                job()
            except Exception as exc:  # a broken job must not end the thread
                try:
                    self._report(kind, f"{kind} update failed: {exc!r}")
                except Exception:
                    _log.exception("report failed")
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()
