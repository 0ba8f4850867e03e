"""Generated table-top scenes with ground truth, for the demo, tests and evaluation.

A scene is a textured grey background with coloured blocks (palette colours
of :mod:`clip_perception.testing.color_encoder`). The target is one block; the
others are distractors of other colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .color_encoder import PALETTE


@dataclass(frozen=True)
class SceneObject:
    colour: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


@dataclass
class Scene:
    """An RGB image, the target phrase, and where the target is (None if absent)."""

    image: np.ndarray
    target: str
    target_box: tuple[int, int, int, int] | None
    objects: list[SceneObject] = field(default_factory=list)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A grey, gently textured surface that matches no palette colour."""
    base = rng.integers(105, 150)
    y = np.linspace(-12, 12, height)[:, None]
    x = np.linspace(-8, 8, width)[None, :]
    noise = rng.normal(0.0, 6.0, size=(height, width))
    grey = np.clip(base + y + x + noise, 60, 200)
    tint = rng.integers(-6, 7, size=3)
    image = np.clip(grey[:, :, None] + tint[None, None, :], 0, 255)
    return image.astype(np.uint8)


def _overlaps(box, boxes, gap: int) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in boxes
    )


def _place(rng, width, height, size_range, taken, gap=12, tries=200):
    low, high = size_range
    if low > min(width, height):
        return None
    for _ in range(tries):
        w = int(rng.integers(low, min(high, width) + 1))
        h = int(rng.integers(low, min(high, height) + 1))
        x0 = int(rng.integers(0, width - w + 1))
        y0 = int(rng.integers(0, height - h + 1))
        box = (x0, y0, x0 + w, y0 + h)
        if not _overlaps(box, taken, gap):
            return box
    return None


def paint(image: np.ndarray, box, colour: str, rng: np.random.Generator) -> None:
    """Fill ``box`` with a palette colour plus a little sensor noise."""
    x0, y0, x1, y1 = box
    rgb = np.asarray(PALETTE[colour], dtype=np.float64)
    patch = rgb + rng.normal(0.0, 5.0, size=(y1 - y0, x1 - x0, 3))
    image[y0:y1, x0:x1] = np.clip(patch, 0, 255).astype(np.uint8)


def make_scene(
    rng: np.random.Generator,
    width: int = 640,
    height: int = 480,
    target_colour: str = "red",
    present: bool = True,
    size_range: tuple[int, int] = (60, 140),
    distractors: int = 0,
    noun: str = "block",
) -> Scene:
    """One scene: the target block (if ``present``) and ``distractors`` blocks of other colours."""
    image = background(rng, width, height)
    taken: list[tuple[int, int, int, int]] = []
    objects: list[SceneObject] = []
    target_box = None
    if present:
        target_box = _place(rng, width, height, size_range, taken)
        if target_box is None:
            raise ValueError(f"no room for a {size_range} object in {width}x{height}")
        taken.append(target_box)
        objects.append(SceneObject(target_colour, target_box))
    others = [c for c in PALETTE if c != target_colour]
    for colour in rng.choice(others, size=distractors, replace=False):
        box = _place(rng, width, height, size_range, taken)
        if box is not None:
            taken.append(box)
            objects.append(SceneObject(str(colour), box))
    for obj in objects:
        paint(image, obj.box, obj.colour, rng)
    return Scene(image, f"{target_colour} {noun}", target_box, objects)


def scene_set(
    count: int,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    size_range: tuple[int, int] = (60, 140),
    max_distractors: int = 3,
    absent_fraction: float = 0.25,
) -> list[Scene]:
    """A reproducible benchmark set: random target colours, 0..max distractors,
    and ``absent_fraction`` of the scenes without the target."""
    rng = np.random.default_rng(seed)
    colours = list(PALETTE)
    n_absent = int(round(count * absent_fraction))
    absent = set(rng.choice(count, size=n_absent, replace=False).tolist()) if n_absent else set()
    scenes = []
    for i in range(count):
        scenes.append(
            make_scene(
                rng, width, height,
                target_colour=str(rng.choice(colours)),
                present=i not in absent,
                size_range=size_range,
                distractors=int(rng.integers(0, max_distractors + 1)),
            )
        )
    return scenes
