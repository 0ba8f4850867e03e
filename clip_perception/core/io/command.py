"""Turn a spoken or typed command into the target phrases to look for.

``"pick up the hammer"`` becomes ``("hammer",)``, ``"grab the red mug on the
table"`` becomes ``("red mug",)`` and ``"find the cup, the spoon and the
plate"`` becomes ``("cup", "spoon", "plate")``. A command that names nothing
usable raises :class:`CommandError` with a reason; ``"stop"`` and friends
clear the target.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_COMMAND_CHARS = 500
MAX_TARGETS = 8
MAX_PHRASE_WORDS = 6


class CommandError(ValueError):
    """The command names no usable target; the message says why.

    ``kind`` names the problem (``empty``, ``too_long``, ``no_object``,
    ``pronoun``, ``too_many``, ``not_text``) so repeats can be throttled per kind.
    """

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Command:
    """A parsed command: the phrases to search for, in the order named."""

    text: str
    targets: tuple[str, ...]  # empty for "stop"-like commands that end the search


def _phrases(*items: str) -> tuple[tuple[str, ...], ...]:
    """Word tuples, longest first, so multi-word phrases win over their prefixes."""
    return tuple(sorted((tuple(i.split()) for i in items), key=len, reverse=True))


_LEADING_FILLER = _phrases(
    "please", "kindly", "hey", "hi", "hello", "ok", "okay", "robot", "now", "then",
    "and", "also", "just", "go ahead and", "try to", "help me", "let's", "lets",
    "could you", "can you", "would you", "will you", "could you please",
    "i want you to", "i need you to", "i'd like you to", "i would like you to",
    "i want", "i need",
)
_VERBS = _phrases(
    "pick up", "pick", "grab", "grasp", "take", "get", "fetch", "bring", "bring me",
    "find", "locate", "look for", "look at", "search for", "detect", "track",
    "follow", "point at", "point to", "show", "show me", "reach for", "reach",
    "hand me", "give me", "pass me", "get me", "fetch me", "find me", "grab me",
    "go to", "move to", "where is", "where's",
    "where are", "is there", "are there", "do you see", "can you see", "see",
    "spot", "identify", "highlight", "lift", "hold", "watch", "tell me where",
    "tell me where is",
)
_TRAILING_FILLER = _phrases(
    "please", "thanks", "thank you", "now", "right now", "for me", "up", "quickly",
    "if you can", "asap",
)
_DETERMINERS = frozenset(
    "the a an some any my your our his her their this that these those".split()
)
_PRONOUNS = frozenset(
    "it them that this those these him her me you us something anything "
    "everything nothing one".split()
)
# A phrase ends where a location or relative clause begins.
_CUT_WORDS = frozenset(
    "on in at from near under underneath beside behind inside into onto next "
    "between above below over by to towards toward with which who that where "
    "so".split()
)
_CLEAR = frozenset(
    {"stop", "cancel", "clear", "reset", "nothing", "none", "stop searching",
     "stop looking", "never mind", "nevermind", "forget it", "stop it", "stop that",
     "cancel that", "cancel it"}
)


def _clean(text: str) -> str:
    """Lower-case, fold Unicode, keep letters, digits, hyphens, apostrophes, commas."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("&", " and ").replace("+", " and ").replace(";", ",")
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    text = re.sub(r"[’`]", "'", text)
    text = re.sub(r"[^\w\s,'-]", " ", text)
    text = re.sub(r"_", " ", text)
    # Apostrophes and hyphens only inside words ("children's", "x-ray"): a quote or
    # dash on its own is punctuation, not part of a target.
    text = re.sub(r"(?<!\w)['-]+|['-]+(?!\w)", " ", text)
    return re.sub(r"\s+", " ", text).strip(" ,'-")


def _strip_leading(words: list[str], table) -> tuple[list[str], bool]:
    """Drop one phrase from ``table`` at the start of ``words``, if present."""
    for phrase in table:
        if tuple(words[: len(phrase)]) == phrase:
            return words[len(phrase):], True
    return words, False


def _strip_trailing(words: list[str], table) -> list[str]:
    changed = True
    while changed and words:
        changed = False
        for phrase in table:
            if len(words) > len(phrase) and tuple(words[-len(phrase):]) == phrase:
                words, changed = words[: -len(phrase)], True
                break
    return words


def _is_clear(words: list[str]) -> bool:
    """"stop", also wrapped in fillers ("please stop", "ok, stop now") or with what
    to stop ("stop looking for the hammer")."""
    stripped = True
    while stripped:
        words = [w for w in words if w != ","]
        words, stripped = _strip_leading(words, _LEADING_FILLER)
    words = _strip_trailing(words, _TRAILING_FILLER)
    if " ".join(words) in _CLEAR:
        return True
    # "stop looking for the hammer", "cancel the search": the whole search ends.
    return (len(words) > 1 and words[0] in ("stop", "cancel")
            and words[1] in ("looking", "searching", "search", "tracking", "the", "finding"))


def _noun_phrase(words: list[str]) -> list[str]:
    """Strip determiners, then cut at the first location or relative word."""
    while words and words[0] in _DETERMINERS:
        words = words[1:]
    for i, word in enumerate(words):
        if i > 0 and word in _CUT_WORDS:
            words = words[:i]
            break
    return _strip_trailing(words, _TRAILING_FILLER)


def parse_command(text: str, max_chars: int = MAX_COMMAND_CHARS) -> Command:
    """Parse a command into target phrases.

    Raises:
        CommandError: the command is empty, too long, or names no object.
    """
    if not isinstance(text, str):
        raise CommandError(f"command must be text, got {type(text).__name__}", "not_text")
    if len(text) > max_chars:
        raise CommandError(
            f"command is {len(text)} characters long; the limit is {max_chars}", "too_long"
        )
    cleaned = _clean(text)
    if not cleaned.replace(",", "").strip():
        raise CommandError("command is empty (no words left after removing punctuation)",
                           "empty")
    words = cleaned.replace(",", " , ").split()
    if _is_clear(words):
        return Command(text=text, targets=())

    had_verb = False
    while True:
        words, filler = _strip_leading(words, _LEADING_FILLER)
        words, verb = _strip_leading(words, _VERBS)
        had_verb |= verb
        comma = bool(words) and words[0] == ","
        words = words[1:] if comma else words
        if not (filler or verb or comma):
            break
    words = _strip_trailing(words, _TRAILING_FILLER)

    # Split into list items on commas and "and"; each item is one target.
    items: list[list[str]] = [[]]
    for word in words:
        if word in (",", "and", "plus", "or"):
            items.append([])
        else:
            items[-1].append(word)

    targets: list[str] = []
    for item in items:
        phrase = _noun_phrase(item)
        if not phrase:
            continue
        joined = " ".join(phrase)
        if joined in _PRONOUNS:
            raise CommandError(
                f"'{joined}' does not name an object; say what to look for, "
                "e.g. 'pick up the hammer'", "pronoun"
            )
        if len(phrase) > MAX_PHRASE_WORDS:
            raise CommandError(
                f"target '{joined}' has {len(phrase)} words; name the object in "
                f"at most {MAX_PHRASE_WORDS}", "too_long"
            )
        if joined not in targets:
            targets.append(joined)

    if not targets:
        if had_verb:
            raise CommandError(f"'{text.strip()}' has a verb but names no object", "no_object")
        raise CommandError(f"'{text.strip()}' names no object", "no_object")
    if len(targets) > MAX_TARGETS:
        raise CommandError(
            f"command names {len(targets)} objects; the limit is {MAX_TARGETS}", "too_many"
        )
    return Command(text=text, targets=tuple(targets))
