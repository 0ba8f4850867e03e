"""Command parsing: what the robot is told to look for."""

from __future__ import annotations

import random

import pytest

from clip_perception.core.io.command import (
    MAX_COMMAND_CHARS,
    MAX_TARGETS,
    Command,
    CommandError,
    parse_command,
)

PARSES = [
    # the basics
    ("pick up the hammer", ("hammer",)),
    ("grab the red mug on the table", ("red mug",)),
    ("find a screwdriver please", ("screwdriver",)),
    ("hammer", ("hammer",)),
    # case, punctuation, politeness, articles
    ("PICK UP THE HAMMER!!!", ("hammer",)),
    ("Pick up the Hammer.", ("hammer",)),
    ("Please, pick up the hammer.", ("hammer",)),
    ("Could you please grab the wrench?", ("wrench",)),
    ("hey robot, find the cup", ("cup",)),
    ("pick up the hammer for me, thanks", ("hammer",)),
    ("a hammer", ("hammer",)),
    ("an apple", ("apple",)),
    ("the the hammer", ("hammer",)),
    ("look for the tennis ball", ("tennis ball",)),
    ("where's the hammer?", ("hammer",)),
    ("find the children's toy", ("children's toy",)),
    ("find the 'hammer'", ("hammer",)),
    ("find the x-ray", ("x-ray",)),
    ("get me a cup", ("cup",)),
    ("bring me the red cup", ("red cup",)),
    ("find the mug that is red", ("mug",)),
    # several targets, in the order named
    ("pick up the hammer and the wrench", ("hammer", "wrench")),
    ("find the cup, the spoon and the plate", ("cup", "spoon", "plate")),
    ("find the cup, the spoon, and the plate", ("cup", "spoon", "plate")),  # Oxford comma
    ("find the cup & saucer", ("cup", "saucer")),
    ("find the cup and the cup", ("cup",)),  # repeats collapse
    # odd but sensible input
    ("Ｈａｍｍｅｒ", ("hammer",)),  # full-width letters fold
    ("pick up the café mug", ("café mug",)),
    ("find the 🔨 hammer", ("hammer",)),
    ("find\nthe\thammer", ("hammer",)),
    ("find the\x00hammer", ("hammer",)),
    ("find the\u200bhammer", ("hammer",)),
]


@pytest.mark.parametrize("text, targets", PARSES)
def test_parses_targets(text: str, targets: tuple[str, ...]) -> None:
    command = parse_command(text)
    assert command.targets == targets
    assert command.text == text


@pytest.mark.parametrize(
    "text", ["stop", "Stop!", "cancel", "never mind", "please stop", "ok, stop now", "stop it",
             "stop looking for the hammer", "cancel the search", "please stop searching now"]
)
def test_stop_clears(text: str) -> None:
    command = parse_command(text)
    assert command.targets == ()


TOO_MANY = "find " + ", ".join(
    ["cup", "spoon", "plate", "fork", "knife", "bowl", "glass", "pan", "pot", "lid"]
    [: MAX_TARGETS + 1]
)

REJECTS = [
    ("", "empty"),
    ("   \t\n", "empty"),
    ("?!... ,,,", "empty"),
    ("pick up", "names no object"),
    ("find the", "names no object"),
    ("pick it up", "'it' does not name an object"),
    ("find them", "'them' does not name an object"),
    ("grab something", "'something' does not name an object"),
    ("pick up the " + "very " * 100 + "hammer", f"limit is {MAX_COMMAND_CHARS}"),
    (TOO_MANY, f"limit is {MAX_TARGETS}"),
    ("find the big old rusty red metal claw hammer", "words"),
]


@pytest.mark.parametrize("text, reason", REJECTS)
def test_rejects_with_reason(text: str, reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        parse_command(text)


def test_length_limit_is_exact() -> None:
    base = "find the hammer"
    fits = base + " " * (MAX_COMMAND_CHARS - len(base))
    assert parse_command(fits).targets == ("hammer",)
    with pytest.raises(CommandError, match="characters"):
        parse_command(fits + " ")
    with pytest.raises(CommandError):
        parse_command("find the hammer", max_chars=5)


def test_exactly_max_targets_is_allowed() -> None:
    names = [f"item{i}" for i in range(MAX_TARGETS)]
    assert parse_command("find " + ", ".join(names)).targets == tuple(names)


@pytest.mark.parametrize("value", [None, 42, b"pick up the hammer", ["hammer"]])
def test_non_text_is_rejected(value) -> None:
    with pytest.raises(CommandError, match="must be text"):
        parse_command(value)


def test_command_error_is_a_value_error() -> None:
    assert issubclass(CommandError, ValueError)


def test_very_long_word_is_kept_whole() -> None:
    word = "a" + "b" * 400
    assert parse_command(f"pick up the {word}").targets == (word,)


def test_newline_separated_lines() -> None:
    command = parse_command("pick up\nthe hammer\n")
    assert command.targets == ("hammer",)


def _check_sane(text: str) -> None:
    """Either a clean Command or a CommandError; nothing else escapes."""
    try:
        command = parse_command(text)
    except CommandError as exc:
        assert str(exc)
        return
    assert isinstance(command, Command)
    assert len(command.targets) <= MAX_TARGETS
    assert len(set(command.targets)) == len(command.targets)
    for target in command.targets:
        assert target == target.strip() and target == target.lower()
        assert any(c.isalnum() for c in target), f"{text!r} -> {command.targets}"
        assert target[0] not in "'-," and target[-1] not in "'-,", f"{text!r} -> {target!r}"


ODD = [
    "\x00\x01\x02", "\u202e hammer", "hammer\r\nwrench", "🔨🔧", "\ufeffpick up the hammer",
    "'", "-", "' - '", "find ' - '", "find -hammer-", "pick up the , , and", "and and and",
    "İstanbul", "e\u0301", "\U0010ffff", "\ud800", "a" * MAX_COMMAND_CHARS, "x\n" * 200,
]


@pytest.mark.parametrize("text", ODD)
def test_odd_inputs(text: str) -> None:
    _check_sane(text)


def test_fuzz_random_strings() -> None:
    rng = random.Random(1234)
    alphabet = "abcxyz ,.;:!?'\"-_&+\t\n\r\x00\x07é😀ﬁ\u200b\u0301ẞİ"
    words = ["pick", "up", "the", "a", "and", "stop", "it", "hammer", "please", "find",
             ",", "me", "on", "'", "-", "then", "cup"]
    for i in range(3000):
        kind = i % 3
        if kind == 0:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        elif kind == 1:
            text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        else:
            text = "".join(chr(rng.randint(0, 0x2FFFF)) for _ in range(rng.randint(0, 30)))
        _check_sane(text)
