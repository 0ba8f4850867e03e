"""CLIP architectures with random weights: the real models' compute, no download.

For benchmarks and tests on machines without weights. The encoder goes
through the same :class:`~clip_perception.core.model.clip_encoder.ClipEncoder` as real
weights. As a node model: ``model:=clip_perception.testing.random_clip:vit_b32``.
"""

from __future__ import annotations

import torch

from ..core.model.clip_encoder import ClipEncoder, resolve_device, resolve_precision
from ..core.model.clip_internals import import_clip

ARCHITECTURES: dict[str, dict[str, int]] = {
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=32, context_length=77, vocab_size=49408,
                     transformer_width=512, transformer_heads=8, transformer_layers=12),
    "tiny": dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64,
                 vision_patch_size=8, context_length=77, vocab_size=49408,
                 transformer_width=64, transformer_heads=1, transformer_layers=1),
}


def random_clip(arch: str = "ViT-B/32", device: str | torch.device = "auto",
                precision: str = "auto", seed: int = 0) -> ClipEncoder:
    """A :class:`ClipEncoder` over ``clip.model.CLIP(**ARCHITECTURES[arch])`` with seeded
    random weights."""
    import_clip()  # imports clip quietly, or says how to install it
    from clip.model import CLIP

    torch_device = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**ARCHITECTURES[arch])
    return ClipEncoder(model.to(torch_device), torch_device,
                       resolve_precision(precision, torch_device))


def vit_b32(device: str | torch.device = "auto") -> ClipEncoder:
    """Factory: ViT-B/32 with random weights (precision auto)."""
    return random_clip("ViT-B/32", device)


def tiny(device: str | torch.device = "auto") -> ClipEncoder:
    """Factory: a tiny CLIP (32 px input) with random weights, for fast tests."""
    return random_clip("tiny", device)


def write_checkpoint(path: str, arch: str = "tiny", seed: int = 0) -> str:
    """Save a seeded random CLIP ``arch`` as a plain state-dict checkpoint at ``path``, which
    the node loads through the real checkpoint path (``model:=/path/to/file.pt``)."""
    import_clip()
    from clip.model import CLIP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**ARCHITECTURES[arch])
    torch.save(model.state_dict(), path)
    return path
