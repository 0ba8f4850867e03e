"""The known-answer encoder family as test parameters.

The first six members run in the fast suite; the members that widen the family
(faint, sharp, convex, crowded, unnormalised, shifted) run in the slow one, so
``make test-fast`` stays short while ``make test`` covers every member.
"""

from __future__ import annotations

import pytest

from clip_perception.testing import known_answer

FAST = ("linear", "concave", "high_background", "low_background", "noisy", "clip_like")


def members() -> list:
    """Every member, the widened ones marked slow."""
    return [m if m in FAST else pytest.param(m, marks=pytest.mark.slow)
            for m in known_answer.family()]
