"""Generated scenes and the known-answer colour encoder they are scored with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clip_perception.testing.color_encoder import PALETTE, ColorEncoder
from clip_perception.testing.scenes import make_scene, scene_set


def crop(image: np.ndarray, box) -> torch.Tensor:
    x0, y0, x1, y1 = box
    return torch.from_numpy(image[y0:y1, x0:x1]).permute(2, 0, 1).float()[None] / 255.0


def test_colour_encoder_known_answers() -> None:
    encoder = ColorEncoder("cpu", input_size=8)
    red = np.zeros((8, 8, 3), np.uint8)
    red[:] = PALETTE["red"]
    red[:, 6:] = (128, 128, 128)  # a quarter grey
    out = encoder.encode_images(crop(red, (0, 0, 8, 8)))
    red_axis = encoder.names.index("red")
    assert out.shape == (1, len(PALETTE) + 1)
    assert out[0, red_axis] == pytest.approx(0.75) and out[0, -1] == pytest.approx(0.25)
    assert out.sum() == pytest.approx(1.0)
    texts = encoder.encode_texts(["a photo of a red block.", "a photo of a table.", "object"])
    assert texts[0].nonzero().flatten().tolist() == [red_axis]
    assert texts[1].nonzero().flatten().tolist() == [len(PALETTE)]
    assert texts[2, :-1].eq(1).all() and texts[2, -1] == 0
    assert encoder.text_calls == 1


def test_scene_has_the_target_where_it_says() -> None:
    encoder = ColorEncoder("cpu", input_size=16)
    rng = np.random.default_rng(0)
    scene = make_scene(rng, 320, 240, target_colour="blue", size_range=(40, 80), distractors=2)
    assert scene.target == "blue block"
    assert scene.objects[0].colour == "blue" and scene.objects[0].box == scene.target_box
    assert len({o.colour for o in scene.objects}) == len(scene.objects)
    x0, y0, x1, y1 = scene.target_box
    assert 40 <= x1 - x0 <= 80 and 40 <= y1 - y0 <= 80
    blue_axis = encoder.names.index("blue")
    inside = encoder.encode_images(crop(scene.image, scene.target_box))
    assert inside[0, blue_axis] > 0.99
    mask = np.ones(scene.image.shape[:2], bool)
    for obj in scene.objects:
        bx0, by0, bx1, by1 = obj.box
        mask[by0:by1, bx0:bx1] = False
    background = torch.from_numpy(scene.image[mask]).float() / 255.0  # [P, 3]
    as_image = background.T.reshape(1, 3, 1, -1)
    assert encoder.encode_images(as_image)[0, -1] == pytest.approx(1.0)  # matches no colour


def test_absent_scene() -> None:
    scene = make_scene(np.random.default_rng(1), 200, 150, present=False, distractors=1)
    assert scene.target_box is None
    assert all(o.colour != "red" for o in scene.objects)


def test_scene_set_is_reproducible() -> None:
    a = scene_set(6, seed=4, width=160, height=120, size_range=(20, 40))
    b = scene_set(6, seed=4, width=160, height=120, size_range=(20, 40))
    assert all(np.array_equal(x.image, y.image) and x.target_box == y.target_box
               for x, y in zip(a, b))
    assert sum(s.target_box is None for s in a) == round(6 * 0.25)


def test_objects_larger_than_the_frame_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="no room"):
        make_scene(np.random.default_rng(0), 50, 40, size_range=(60, 140))


def test_size_range_is_clipped_to_the_frame() -> None:
    scene = make_scene(np.random.default_rng(0), 100, 80, size_range=(60, 140))
    x0, y0, x1, y1 = scene.target_box
    assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 80
