"""The known-answer encoder family as test parameters.

The sweeps over the family encode hundreds of crops per member, so they are
marked ``slow``: ``make test`` runs every member, ``make test-fast`` none.
"""

from __future__ import annotations

from clip_perception.testing import known_answer


def members() -> list[str]:
    """Every member of the family."""
    return list(known_answer.family())
