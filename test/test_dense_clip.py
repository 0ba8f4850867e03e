"""Dense features of the real CLIP code (ClearCLIP for ViT, MaskCLIP for ResNet), tiny
random checkpoints: shapes, the grid-to-pixel mapping, consistency with encode_images,
and that the dense path runs the loaded model's own weights (no copy of the architecture)."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

with warnings.catch_warnings():  # openai-clip imports the deprecated pkg_resources
    warnings.simplefilter("ignore")
    from clip.model import CLIP

from clip_perception.core.detect.hybrid import cell_bounds, supports_dense
from clip_perception.core.model import dense_clip
from clip_perception.core.model.clip_encoder import ClipEncoder
from clip_perception.core.model.dense_clip import interpolate_grid, working_size

CPU = torch.device("cpu")
COLOURS = {"red": (0.9, 0.1, 0.1), "blue": (0.1, 0.2, 0.9), "green": (0.1, 0.8, 0.2),
           "grey": (0.5, 0.5, 0.5)}


def tiny_vit(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64,
                vision_patch_size=8, context_length=77, vocab_size=49408,
                transformer_width=64, transformer_heads=1, transformer_layers=1).eval()


def tiny_resnet(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16,
                vision_patch_size=None, context_length=77, vocab_size=49408,
                transformer_width=64, transformer_heads=1, transformer_layers=1).eval()


def encoder(kind: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> ClipEncoder:
    enc = ClipEncoder(tiny_vit(seed) if kind == "vit" else tiny_resnet(seed), CPU, dtype)
    enc.dense_long_side = 64 if kind == "vit" else 128  # 8x6 cells of 8 px / 4x3 of 32 px
    return enc


def uniform(colour, height: int, width: int) -> torch.Tensor:
    return torch.tensor(colour).view(1, 3, 1, 1).expand(1, 3, height, width).contiguous()


@pytest.mark.slow
@pytest.mark.parametrize("kind, grid", [("vit", (6, 8)), ("resnet", (3, 4))])
@pytest.mark.parametrize("size", [(48, 64), (96, 128), (30, 41)])
def test_shapes(kind: str, grid, size) -> None:
    enc = encoder(kind)
    assert supports_dense(enc)
    out = enc.encode_dense(torch.rand(1, 3, *size))
    step = 8 if kind == "vit" else 32
    rows, cols = working_size(*size, step, enc.dense_long_side)
    assert out.shape == (rows // step, cols // step, 32)
    if size == (48, 64):
        assert out.shape[:2] == grid
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_bad_input_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[1, 3, H, W\]"):
        encoder("vit").encode_dense(torch.rand(2, 3, 32, 32))


def test_working_size_keeps_aspect_in_whole_patches() -> None:
    assert working_size(480, 640, 32, 448) == (320, 448)
    assert working_size(640, 480, 32, 448) == (448, 320)
    assert working_size(10, 1000, 32, 448) == (32, 448)  # at least one patch
    for h, w in [(480, 640), (720, 1280), (100, 100)]:
        rh, rw = working_size(h, w, 16, 448)
        assert rh % 16 == 0 and rw % 16 == 0 and max(rh, rw) == 448


def test_cell_bounds_divide_the_frame_evenly() -> None:
    xs, ys = cell_bounds(3, 4, 640, 480)
    assert xs.tolist() == [0, 160, 320, 480, 640]
    assert ys.tolist() == [0, 160, 320, 480]
    xs, ys = cell_bounds(7, 9, 101, 50)
    assert xs[0] == 0 and xs[-1] == 101 and ys[0] == 0 and ys[-1] == 50
    assert np.all(np.diff(xs) >= 101 // 9) and np.all(np.diff(ys) >= 50 // 7)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vit", "resnet"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_change_in_one_half_changes_that_half_of_the_grid(kind: str, seed: int) -> None:
    """Left/right and top/bottom: the cells over the changed pixels change most."""
    enc = encoder(kind, seed)
    base = torch.full((1, 3, 96, 128), 0.5)
    before = enc.encode_dense(base)
    rows, cols = before.shape[:2]
    for axis in ("left", "top"):
        changed = base.clone()
        if axis == "left":
            changed[..., :64] = torch.tensor(COLOURS["red"]).view(1, 3, 1, 1)
        else:
            changed[..., :48, :] = torch.tensor(COLOURS["blue"]).view(1, 3, 1, 1)
        diff = (enc.encode_dense(changed) - before).norm(dim=-1)
        if axis == "left":
            near, far = diff[:, : cols // 2].mean(), diff[:, cols // 2:].mean()
        else:
            near, far = diff[: rows // 2].mean(), diff[rows // 2:].mean()
        assert near > 2 * far, (axis, float(near), float(far))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_vit_uniform_image_is_nearest_its_own_image_embedding(seed: int) -> None:
    """Random weights do not align patch and class tokens by design; still, the mean
    dense embedding of a uniform colour is closer to encode_images of that colour
    than to encode_images of any other colour."""
    enc = encoder("vit", seed)
    crops = {name: F.normalize(enc.encode_images(uniform(c, 32, 32))[0], dim=0)
             for name, c in COLOURS.items()}
    for name, colour in COLOURS.items():
        dense = F.normalize(enc.encode_dense(uniform(colour, 48, 64)).mean(dim=(0, 1)), dim=0)
        sims = {other: float(dense @ emb) for other, emb in crops.items()}
        assert max(sims, key=sims.get) == name, sims


def test_resnet_value_path_is_the_attention_pool_per_location() -> None:
    """With the pool's query/key zeroed (uniform attention) and its class position set to
    the mean of the spatial ones, the pool's output is exactly the mean of the per-location
    value path at the native resolution: the dense path is the pool's value path."""
    enc = encoder("resnet")
    pool = enc.model.visual.attnpool
    with torch.no_grad():
        for proj in (pool.q_proj, pool.k_proj):
            proj.weight.zero_()
            proj.bias.zero_()
        pool.positional_embedding[0] = pool.positional_embedding[1:].mean(dim=0)
    enc.dense_long_side = 64  # native: 2x2 cells, no interpolation
    image = torch.rand(1, 3, 64, 64)
    dense = enc.encode_dense(image)
    assert dense.shape == (2, 2, 32)
    pooled = enc.encode_images(image)[0]
    torch.testing.assert_close(dense.mean(dim=(0, 1)), pooled, rtol=1e-4, atol=1e-5)


def test_positional_embeddings_are_unchanged_on_the_native_grid() -> None:
    pos = tiny_vit().visual.positional_embedding.detach()
    assert interpolate_grid(pos, 4, 4) is pos
    bigger = interpolate_grid(pos, 6, 8)
    assert bigger.shape == (1 + 48, pos.shape[1])
    torch.testing.assert_close(bigger[0], pos[0])  # the class position is kept


@pytest.mark.parametrize("kind, names", [
    ("vit", ["visual.conv1.weight", "visual.positional_embedding",
             "visual.transformer.resblocks.0.mlp.c_fc.weight",
             "visual.transformer.resblocks.1.attn.in_proj_weight",
             "visual.transformer.resblocks.1.attn.out_proj.weight", "visual.proj"]),
    ("resnet", ["visual.conv1.weight", "visual.layer4.0.downsample.0.weight",
                "visual.attnpool.positional_embedding", "visual.attnpool.v_proj.weight",
                "visual.attnpool.c_proj.weight"]),
])
def test_dense_path_runs_the_loaded_weights(kind: str, names: list[str]) -> None:
    """Changing a weight of the loaded model changes the dense output: no copy is used."""
    enc = encoder(kind)
    image = torch.rand(1, 3, 96, 128)
    before = enc.encode_dense(image)
    params = dict(enc.model.named_parameters())
    for name in names:
        with torch.no_grad():
            params[name].mul_(1.5).add_(0.05)
        after = enc.encode_dense(image)
        assert not torch.allclose(after, before), name
        before = after


def test_no_layers_are_defined_in_the_dense_module() -> None:
    source = inspect.getsource(dense_clip)
    for construct in ("nn.Parameter(", "nn.Linear(", "nn.Conv2d(", "nn.MultiheadAttention(",
                      "nn.LayerNorm(", "load_state_dict", "class "):
        assert construct not in source, construct


def test_bf16_matches_fp32() -> None:
    """bf16 (autocast, as on CPUs with native bf16) stays close to fp32."""
    image = torch.rand(1, 3, 48, 64)
    full = encoder("vit", dtype=torch.float32).encode_dense(image)
    half = encoder("vit", dtype=torch.bfloat16).encode_dense(image)
    cos = F.cosine_similarity(full.reshape(-1, 32), half.reshape(-1, 32), dim=-1)
    assert cos.min() > 0.97


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_hybrid_mode_runs_on_the_real_dense_path(kind: str) -> None:
    """Hybrid end to end on the real CLIP code with random weights (no quality to assert):
    two targets, each with a box inside the frame, the crop budget kept, the heatmap from
    the dense map at the published cell size."""
    from clip_perception.core.detect.config import DetectorConfig
    from clip_perception.core.detect.detector import Detector

    config = DetectorConfig(mode="hybrid", verify_crops=12)
    detector = Detector(encoder(kind), config)
    frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    result = detector.detect(frame, ["red mug", "blue box"], with_heatmap=True)
    assert 2 <= result.crops <= config.verify_crops
    cell = result.heatmap_cell
    for target, heat in zip(result.targets, result.heatmaps):
        x0, y0, x1, y1 = target.box
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120, target.box
        assert 0.0 <= target.score <= 1.0
        assert heat.shape == (-(-120 // cell), -(-160 // cell))
        assert np.isfinite(heat).all()
