"""Generated table-top scenes with ground truth, for the demo, tests and evaluation.

A scene is a textured grey background with coloured blocks (palette colours
of :mod:`clip_perception.testing.color_encoder`). The target is one block; the
others are distractors of other colours.

:func:`hard_scene_set` adds what the issue-7 evaluation needs: objects from
30 px to half the frame, objects cut by the frame border, a distractor of the
target's colour but another shape (a thin bar or a ring, with at most half
the target's colour mass, since a colour encoder cannot tell shapes apart),
textured objects, and a second instance of the target.
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
    """An RGB image, the target phrase, and where the target is (None if absent).

    ``target_boxes`` lists every instance of the target (visible parts); a
    region on any of them is right. ``target_box`` is the first.
    """

    image: np.ndarray
    target: str
    target_box: tuple[int, int, int, int] | None
    objects: list[SceneObject] = field(default_factory=list)
    target_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    tags: tuple[str, ...] = ()  # what makes the scene hard: "cut", "textured", "twin", ...

    def __post_init__(self) -> None:
        if not self.target_boxes and self.target_box is not None:
            self.target_boxes = [self.target_box]


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


def _free_box(rng, w, h, width, height, taken, gap):
    """A w x h box at a random position in the frame, or None if it lands on ``taken``."""
    x0 = int(rng.integers(0, width - w + 1))
    y0 = int(rng.integers(0, height - h + 1))
    box = (x0, y0, x0 + w, y0 + h)
    return None if _overlaps(box, taken, gap) else box


def _place(rng, width, height, size_range, taken, gap=12, tries=200):
    low, high = size_range
    if low > min(width, height):
        return None
    for _ in range(tries):
        w = int(rng.integers(low, min(high, width) + 1))
        h = int(rng.integers(low, min(high, height) + 1))
        box = _free_box(rng, w, h, width, height, taken, gap)
        if box is not None:
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


# --- harder scenes (issue 7) -------------------------------------------------
SIZE_BUCKETS = ((30, 60), (60, 120), (120, 10_000))  # sqrt of the visible target area, pixels


def size_bucket(box: tuple[int, int, int, int]) -> str:
    """The size bucket of a box, by the square root of its area: ``"30-60"`` ..."""
    side = float(np.sqrt(max(box[2] - box[0], 0) * max(box[3] - box[1], 0)))
    for low, high in SIZE_BUCKETS:
        if side < high:
            return f"{low}-{high}" if high < 10_000 else f">={low}"
    return f">={SIZE_BUCKETS[-1][0]}"


def _shade(rgb: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(rgb * factor, 0, 255)


def paint_textured(image: np.ndarray, box, colour: str, rng: np.random.Generator,
                   texture: str) -> None:
    """Fill ``box`` with a palette colour and a texture: ``noise`` (strong sensor
    noise), ``stripes`` or ``checker`` (a lighter and a darker shade, with thin
    dark lines, so about four fifths of the object still reads as its colour)."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    rgb = np.asarray(PALETTE[colour], dtype=np.float64)
    if texture == "noise":
        patch = rgb + rng.normal(0.0, 22.0, size=(h, w, 3))
    else:
        period = int(rng.integers(6, 15))
        yy, xx = np.mgrid[0:h, 0:w]
        if texture == "stripes":
            phase = (xx if rng.random() < 0.5 else yy) % period
        else:  # checker
            phase = ((xx // period + yy // period) % 2) * period // 2 + (xx % period) // 2
            phase %= period
        light = _shade(rgb, 1.08)
        mid = _shade(rgb, 0.9)
        dark = _shade(rgb, 0.45)
        patch = np.where((phase < period // 2)[..., None], light, mid)
        patch = np.where((phase == period - 1)[..., None], dark, patch)  # thin dark lines
        patch = patch + rng.normal(0.0, 5.0, size=(h, w, 3))
    image[y0:y1, x0:x1] = np.clip(patch, 0, 255).astype(np.uint8)


def paint_shape(image: np.ndarray, box, colour: str, shape: str,
                rng: np.random.Generator) -> None:
    """A ``bar`` (a thin filled rectangle: ``box`` itself) or a ``ring`` (an
    annulus inscribed in ``box``, 3 px thick)."""
    x0, y0, x1, y1 = box
    rgb = np.asarray(PALETTE[colour], dtype=np.float64)
    patch = image[y0:y1, x0:x1].astype(np.float64)
    if shape == "bar":
        mask = np.ones(patch.shape[:2], bool)
    else:
        h, w = patch.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        r = np.hypot((yy + 0.5 - h / 2) / (h / 2), (xx + 0.5 - w / 2) / (w / 2))
        mask = (r <= 1.0) & (r >= 1.0 - 3.0 / (min(h, w) / 2))
    noisy = rgb + rng.normal(0.0, 5.0, size=patch.shape)
    patch[mask] = noisy[mask]
    image[y0:y1, x0:x1] = np.clip(patch, 0, 255).astype(np.uint8)


def _clip_box(box, width, height):
    x0, y0, x1, y1 = box
    return (max(0, x0), max(0, y0), min(width, x1), min(height, y1))


def _place_cut(rng, width, height, size_range, taken, gap=12, tries=200):
    """A box that sticks out of the frame: 20 to 50% of it cut off on one or two
    sides. Returns (full box, visible box) or None."""
    low, high = max(size_range[0], 60), min(size_range[1], width // 2, height // 2)
    if low > high:
        return None
    for _ in range(tries):
        w, h = int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))
        x0 = int(rng.integers(0, width - w + 1))
        y0 = int(rng.integers(0, height - h + 1))
        sides = rng.choice(4, size=int(rng.integers(1, 3)), replace=False)
        for side in sides:
            cut = float(rng.uniform(0.2, 0.5))
            if side == 0:
                x0 = -int(cut * w)
            elif side == 1:
                x0 = width - w + int(cut * w)
            elif side == 2:
                y0 = -int(cut * h)
            else:
                y0 = height - h + int(cut * h)
        full = (x0, y0, x0 + w, y0 + h)
        visible = _clip_box(full, width, height)
        if min(visible[2] - visible[0], visible[3] - visible[1]) < 30:
            continue
        if not _overlaps(visible, taken, gap):
            return full, visible
    return None


def _place_thin(rng, width, height, target_area, taken, shape, gap=12, tries=200):
    """A bar or ring with at most half ``target_area`` of colour."""
    for _ in range(tries):
        if shape == "bar":
            thick = int(rng.integers(3, 7))
            length = int(min(max(20, target_area / 2 / thick), width // 2, height // 2))
            if length < 20:
                return None
            w, h = (length, thick) if rng.random() < 0.5 else (thick, length)
        else:
            side = int(min(max(24, target_area / 2 / (3 * np.pi)), width // 2, height // 2))
            w = h = side
            if 3 * np.pi * side > target_area / 2 + 1:
                return None
        box = _free_box(rng, w, h, width, height, taken, gap)
        if box is not None:
            return box
    return None


def make_hard_scene(
    rng: np.random.Generator,
    width: int = 640,
    height: int = 480,
    target_colour: str = "red",
    present: bool = True,
    size_range: tuple[int, int] | None = None,
    distractors: int = 0,
    cut: bool = False,
    texture: str = "flat",
    same_colour: str | None = None,
    twin: bool = False,
    noun: str = "block",
) -> Scene:
    """One harder scene (see the module docstring).

    Args:
        size_range: object sides, default 30 px to half the frame's short side.
        cut: the target sticks out of the frame (its truth is the visible part).
        texture: ``flat``, ``noise``, ``stripes`` or ``checker``, for the target
            and its twin.
        same_colour: ``"bar"`` or ``"ring"``: a distractor of the target's colour
            and another shape (only in scenes with the target, since a colour
            encoder rightly calls it the target's colour).
        twin: a second instance of the target, of another size.
    """
    if size_range is None:
        size_range = (30, min(width, height) // 2)
    image = background(rng, width, height)
    taken: list[tuple[int, int, int, int]] = []
    boxes: list[tuple[int, int, int, int]] = []
    objects: list[SceneObject] = []
    tags = []
    if present:
        placed = _place_cut(rng, width, height, size_range, taken) if cut else None
        if placed is not None:
            full, visible = placed
            tags.append("cut")
        else:
            full = visible = _place(rng, width, height, size_range, taken)
            if full is None:
                raise ValueError(f"no room for a {size_range} object in {width}x{height}")
        boxes.append(visible)
        taken.append(visible)
        if twin:
            other = _place(rng, width, height, size_range, taken)
            if other is not None:
                boxes.append(other)
                taken.append(other)
                tags.append("twin")
        for box in ([full] + boxes[1:]):
            canvas = np.zeros((box[3] - box[1], box[2] - box[0], 3), np.uint8)
            whole = (0, 0, canvas.shape[1], canvas.shape[0])
            if texture == "flat":
                paint(canvas, whole, target_colour, rng)
            else:
                paint_textured(canvas, whole, target_colour, rng, texture)
            vx0, vy0, vx1, vy1 = _clip_box(box, width, height)
            image[vy0:vy1, vx0:vx1] = canvas[vy0 - box[1]:vy1 - box[1], vx0 - box[0]:vx1 - box[0]]
        if texture != "flat":
            tags.append("textured")
        objects.extend(SceneObject(target_colour, b) for b in boxes)
        if same_colour:
            area = min((b[2] - b[0]) * (b[3] - b[1]) for b in boxes)
            thin = _place_thin(rng, width, height, area, taken, same_colour)
            if thin is not None:
                taken.append(thin)
                paint_shape(image, thin, target_colour, same_colour, rng)
                objects.append(SceneObject(f"{target_colour} {same_colour}", thin))
                tags.append("same_colour")
    others = [c for c in PALETTE if c != target_colour]
    for colour in rng.choice(others, size=distractors, replace=False):
        box = _place(rng, width, height, size_range, taken)
        if box is not None:
            taken.append(box)
            objects.append(SceneObject(str(colour), box))
            paint(image, box, str(colour), rng)
    return Scene(image, f"{target_colour} {noun}", boxes[0] if boxes else None, objects,
                 target_boxes=boxes, tags=tuple(tags))


def hard_scene_set(
    count: int,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    size_range: tuple[int, int] | None = None,
    max_distractors: int = 3,
    absent_fraction: float = 0.25,
    cut_fraction: float = 0.2,
    textured_fraction: float = 0.4,
    same_colour_fraction: float = 0.25,
    twin_fraction: float = 0.15,
) -> list[Scene]:
    """A reproducible set of :func:`make_hard_scene` scenes: random target colours,
    sizes 30 px to half the frame, 0..max distractors, ``absent_fraction`` without
    the target, and the given shares of cut, textured, same-colour-distractor
    and two-instance scenes among those with it."""
    rng = np.random.default_rng(seed)
    colours = list(PALETTE)
    n_absent = int(round(count * absent_fraction))
    absent = set(rng.choice(count, size=n_absent, replace=False).tolist()) if n_absent else set()
    textures = ("noise", "stripes", "checker")
    scenes = []
    for i in range(count):
        present = i not in absent
        scenes.append(make_hard_scene(
            rng, width, height,
            target_colour=str(rng.choice(colours)),
            present=present,
            size_range=size_range,
            distractors=int(rng.integers(0, max_distractors + 1)),
            cut=bool(rng.random() < cut_fraction),
            texture=str(rng.choice(textures)) if rng.random() < textured_fraction else "flat",
            same_colour=(str(rng.choice(("bar", "ring")))
                         if present and rng.random() < same_colour_fraction else None),
            twin=bool(rng.random() < twin_fraction),
        ))
    return scenes
