"""A known-answer encoder: embeddings are colour histograms.

An image embeds as the fraction of its pixels near each palette colour, plus
one "other" dimension for everything else (the scene). A text embeds as the
palette colours it names; scene words (table, wall...) embed as "other"; any
other text (e.g. "object") embeds evenly over all colours. A window's target
probability is then a known function of how much of it the object covers,
so tests, the demo and the evaluation tool can assert exact answers without
CLIP weights.

Use it as ``model:=clip_perception.testing.color_encoder:factory``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 205, 215),
    "orange": (245, 140, 30),
    "purple": (110, 40, 160),
}
SCENE_WORDS = frozenset(
    "table wall floor shelf background clutter ground desk room scene surface "
    "ceiling counter carpet".split()
)
MATCH_DISTANCE = 60.0  # RGB units (0-255) within which a pixel counts as a palette colour


class ColorEncoder:
    """Colour-histogram encoder with the :class:`~clip_perception.core.encoders.Encoder` API."""

    def __init__(self, device: torch.device | str = "cpu", input_size: int = 64,
                 logit_scale: float = 10.0):
        self.device = torch.device(device)
        self.input_size = int(input_size)
        self.logit_scale = float(logit_scale)
        self.names = tuple(PALETTE)
        self._palette = torch.tensor(list(PALETTE.values()), dtype=torch.float32,
                                     device=self.device) / 255.0
        self.dim = len(self.names) + 1
        self.text_calls = 0  # lets tests check that text embeddings are cached

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` RGB in [0, 1] -> ``[N, K+1]`` colour fractions."""
        x = images.float().permute(0, 2, 3, 1)  # N S S 3
        dist = torch.cdist(x.reshape(x.shape[0], -1, 3), self._palette.expand(x.shape[0], -1, -1))
        nearest = dist.argmin(dim=-1)
        matched = dist.gather(-1, nearest.unsqueeze(-1)).squeeze(-1) * 255.0 <= MATCH_DISTANCE
        index = torch.where(matched, nearest, torch.full_like(nearest, self.dim - 1))
        counts = torch.zeros(x.shape[0], self.dim, device=x.device)
        counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float32))
        return counts / index.shape[1]

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Colour words -> their palette axes; scene words -> "other"; else all colours."""
        self.text_calls += 1
        out = torch.zeros(len(texts), self.dim, device=self.device)
        for row, text in enumerate(texts):
            words = set(re.findall(r"[a-z]+", text.lower()))
            colours = [i for i, name in enumerate(self.names) if name in words]
            if colours:
                out[row, colours] = 1.0
            elif words & SCENE_WORDS:
                out[row, -1] = 1.0
            else:
                out[row, :-1] = 1.0
        return out


def factory(device: torch.device | str = "cpu") -> ColorEncoder:
    """Entry point for ``model:=clip_perception.testing.color_encoder:factory``."""
    return ColorEncoder(device=device)
