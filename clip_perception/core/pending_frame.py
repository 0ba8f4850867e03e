"""A frame decoded when the worker takes it, not when it arrives.

A compressed camera at 30 Hz delivers far more frames than a CLIP pipeline
processes; the rest are replaced in the newest-frame slot. Decoding each one
on arrival would spend the executor's time on frames nobody looks at, so the
input hands the loop a :class:`PendingFrame` and the worker decodes only the
frames it takes (:meth:`~.inference_loop.InferenceLoop.submit`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class PendingFrame:
    """``decode()`` -> a frame, run by :meth:`resolve` on the worker thread.

    Args:
        decode: makes the frame (e.g. decodes a jpeg); may raise ``errors``.
        errors: the exceptions that mean "a bad input": ``rejected(exc)`` is
            called with them (count, log) and :meth:`resolve` returns None.
            Anything else propagates (a bug, counted by the loop).
        rejected: called on the worker thread with a bad input's exception.
    """

    __slots__ = ("_decode", "_errors", "_rejected")

    def __init__(self, decode: Callable[[], Any], errors: tuple[type[BaseException], ...],
                 rejected: Callable[[BaseException], None]):
        self._decode = decode
        self._errors = errors
        self._rejected = rejected

    def resolve(self) -> Any | None:
        """The decoded frame, or None for a bad input (already reported by ``rejected``)."""
        try:
            return self._decode()
        except self._errors as exc:
            self._rejected(exc)
            return None


def resolve(frame: Any) -> Any | None:
    """``frame`` itself, or a :class:`PendingFrame`'s decoded frame (None if rejected)."""
    return frame.resolve() if isinstance(frame, PendingFrame) else frame
