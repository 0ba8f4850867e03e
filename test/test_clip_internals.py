"""openai-clip's private API, used only in clip_perception.core.model.clip_internals.

These fail loudly (rather than the node or the benchmark failing obscurely) if a
clip release renames or changes ``clip.clip._MODELS`` or ``clip.clip._transform``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from optional import needs_module
from PIL import Image

from clip_perception.core.model import clip_internals
from clip_perception.core.model.clip_encoder import CLIP_MEAN, CLIP_STD
from clip_perception.core.model.clip_internals import import_clip

pytestmark = needs_module("clip", "openai-clip is not installed (make setup installs it)")


def test_every_public_model_name_has_a_checkpoint_file() -> None:
    names = import_clip().available_models()
    assert "ViT-B/32" in names
    files = {name: clip_internals.checkpoint_file(name) for name in names}
    assert all(f and f.endswith(".pt") and "/" not in f for f in files.values()), files
    assert len(set(files.values())) == len(files)  # one file per model
    assert files["ViT-B/32"] == "ViT-B-32.pt"
    assert clip_internals.checkpoint_file("no-such-model") is None


@pytest.mark.parametrize("size", [32, 224])
def test_preprocess_resizes_crops_and_normalizes_like_clip(size: int) -> None:
    preprocess = clip_internals.preprocess(size)
    rgb = (200, 30, 90)
    image = Image.fromarray(np.full((60, 100, 3), rgb, dtype=np.uint8))  # not square, not size
    out = preprocess(image)
    assert isinstance(out, torch.Tensor) and out.shape == (3, size, size)
    want = (torch.tensor(rgb) / 255.0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out.mean(dim=(1, 2)), want.float(), atol=1e-3, rtol=0)
    # A left-right split keeps its layout through resize and centre crop.
    halves = np.zeros((50, 50, 3), dtype=np.uint8)
    halves[:, 25:] = 255
    out = preprocess(Image.fromarray(halves))
    assert out[:, :, : size // 4].mean() < 0 < out[:, :, -size // 4:].mean()
