"""The known-answer encoder family: contracts, dense cells and response curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clip_perception.core.model.loading import load_encoder
from clip_perception.testing import known_answer as ka
from clip_perception.testing.color_encoder import PALETTE, ColorEncoder, even_edges

SHARES = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]
RED = torch.tensor(PALETTE["red"], dtype=torch.float32).view(3, 1, 1) / 255.0


def _grey_frame(height: int = 120, width: int = 200, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.5 + 0.03 * torch.randn(1, 3, height, width, generator=g)).clamp(0, 1)


def _cosines(encoder, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
    img = F.normalize(encoder.encode_images(images), dim=-1)
    txt = F.normalize(encoder.encode_texts(texts), dim=-1)
    return img @ txt.T


@pytest.mark.slow
@pytest.mark.parametrize("name", ka.family())
def test_every_member_loads_as_module_factory_and_has_both_contracts(name: str) -> None:
    encoder = load_encoder(ka.spec(name), device="cpu")
    assert encoder.name == name
    frame = _grey_frame()
    crops = F.interpolate(frame, size=encoder.input_size)
    assert encoder.encode_images(crops.repeat(2, 1, 1, 1)).shape == (2, encoder.dim)
    assert encoder.encode_texts(["a red block", "table"]).shape == (2, encoder.dim)
    assert encoder.logit_scale > 0
    assert encoder.encode_dense(frame).dim() == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", [*ka.family(), "color"])
@pytest.mark.parametrize("size", [(120, 200), (97, 131)])
def test_dense_cells_are_the_crops_of_the_evenly_divided_frame(name: str, size) -> None:
    encoder = ColorEncoder() if name == "color" else ka.load(name)
    frame = _grey_frame(*size)
    frame[:, :, 20:70, 30:90] = RED  # straddles cells
    dense = encoder.encode_dense(frame)
    rows, cols, dim = dense.shape
    assert dim == encoder.encode_images(frame).shape[1]
    assert (rows, cols) == (round(size[0] / 16), round(size[1] / 16))
    ys, xs = even_edges(size[0], rows), even_edges(size[1], cols)
    for i, j in [(0, 0), (2, 3), (rows - 1, cols - 1), (3, 1)]:
        cell = frame[:, :, ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
        expected = encoder.encode_images(cell)[0]
        assert torch.allclose(dense[i, j], expected, atol=1e-3), (i, j)  # float sums differ


def test_linear_response_is_the_share() -> None:
    curve = ka.load("linear").response_curve(SHARES)
    np.testing.assert_allclose(curve.numpy(), SHARES, atol=1e-6)


@pytest.mark.parametrize("name", ["concave", "clip_like"])
def test_concave_members_saturate_early(name: str) -> None:
    encoder = ka.load(name)
    curve = encoder.response_curve(SHARES).numpy()
    assert np.all(np.diff(curve) > 0), curve
    # concave: every chord lies below the curve, so the slopes fall
    slopes = np.diff(curve) / np.diff(SHARES)
    assert np.all(np.diff(slopes) < 0), slopes
    # saturates early: a quarter of the window gets most of the full window's rise
    rise = (curve[2] - curve[0]) / (curve[-1] - curve[0])
    assert rise >= 0.75, rise


def test_clip_like_cosines_sit_in_a_narrow_band_at_clip_temperature() -> None:
    encoder = ka.load("clip_like")
    curve = encoder.response_curve(SHARES).numpy()
    assert curve.min() > 0.8 and curve.max() - curve.min() < 0.15
    assert encoder.logit_scale == 100.0


@pytest.mark.parametrize("name,level", [("high_background", 0.5), ("low_background", 0.05)])
def test_background_similarity_is_constant(name: str, level: float) -> None:
    encoder = ka.load(name)
    frames = []
    for share in SHARES:
        frame = _grey_frame(64, 64)
        frame[:, :, : int(round(share * 64)), :] = RED
        frames.append(frame)
    cos = _cosines(encoder, torch.cat(frames), ["table", "a red block"])
    # constant (up to the normalisation a full red window needs) and at the named level
    assert torch.allclose(cos[:-1, 0], torch.full((len(SHARES) - 1,), level), atol=1e-5)
    assert cos[-1, 0] <= level + 1e-6
    linear_part = cos[:-1, 1].numpy()
    np.testing.assert_allclose(linear_part, [round(s * 64) / 64 for s in SHARES[:-1]], atol=1e-5)


def test_high_and_low_background_differ_as_named() -> None:
    frame = _grey_frame(64, 64)
    high = _cosines(ka.load("high_background"), frame, ["table"])
    low = _cosines(ka.load("low_background"), frame, ["table"])
    assert high.item() >= 0.45 > 0.1 > low.item()


@pytest.mark.slow
def test_noisy_is_noisy_repeatable_and_seeded() -> None:
    frames = torch.cat([_grey_frame(64, 64, seed=s) for s in range(40)])
    frames[:20, :, :32] = RED
    linear = ka.load("linear").encode_images(frames)
    noisy = ka.load("noisy").encode_images(frames)
    again = ka.load("noisy").encode_images(frames)
    other_seed = ka.KnownAnswerEncoder(ka.MEMBERS["noisy"], seed=7).encode_images(frames)
    assert torch.equal(noisy, again)
    assert not torch.allclose(noisy, other_seed)
    spread = (F.normalize(noisy, dim=-1) - F.normalize(linear, dim=-1)).std().item()
    assert 0.02 < spread < 0.2, spread


def test_unknown_member_names_the_choices() -> None:
    with pytest.raises(KeyError, match="linear"):
        ka.load("nope")
