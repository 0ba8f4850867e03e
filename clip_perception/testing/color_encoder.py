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
DENSE_PATCH = 16  # pixels per side of an ``encode_dense`` cell (the grid is rounded to fit)


def palette_index(images: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` RGB in [0, 1] -> ``[N, H, W]``: each pixel's palette colour,
    or ``len(palette)`` ("other") when no colour is within :data:`MATCH_DISTANCE`."""
    x = images.float().permute(0, 2, 3, 1).reshape(-1, 3)  # pixels x RGB
    n, _, h, w = images.shape
    # squared distances by one matmul (cdist is several times slower on CPU)
    dist2 = (x * x).sum(1, keepdim=True) - 2.0 * x @ palette.T + (palette * palette).sum(1)
    best, nearest = dist2.min(dim=1)
    matched = best <= (MATCH_DISTANCE / 255.0) ** 2
    index = torch.where(matched, nearest, torch.full_like(nearest, len(palette)))
    return index.view(n, h, w)


def class_fractions(index: torch.Tensor, dim: int) -> torch.Tensor:
    """``[N, P]`` class indices -> ``[N, dim]`` share of each class."""
    counts = torch.zeros(index.shape[0], dim, device=index.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float32))
    return counts / max(index.shape[1], 1)


def even_edges(length: int, cells: int) -> list[int]:
    """Cell boundaries that divide ``length`` pixels evenly into ``cells`` cells."""
    return [round(i * length / cells) for i in range(cells + 1)]


def dense_grid(height: int, width: int, patch: int) -> tuple[int, int]:
    """The ``(h, w)`` grid of about ``patch``-pixel cells for a ``height`` x ``width`` image."""
    return max(1, round(height / patch)), max(1, round(width / patch))


def cell_fractions(index: torch.Tensor, dim: int, patch: int) -> torch.Tensor:
    """``[H, W]`` class indices -> ``[h, w, dim]`` class shares per cell, the cells
    dividing H and W evenly (cell (i, j) covers rows ``even_edges(H, h)[i:i+2]``)."""
    height, width = index.shape
    rows, cols = dense_grid(height, width, patch)
    onehot = torch.nn.functional.one_hot(index, dim).float()  # H W dim
    integral = torch.zeros(height + 1, width + 1, dim, device=index.device)
    integral[1:, 1:] = onehot.cumsum(0).cumsum(1)
    ys = torch.tensor(even_edges(height, rows), device=index.device)
    xs = torch.tensor(even_edges(width, cols), device=index.device)
    y0, y1 = ys[:-1, None], ys[1:, None]
    x0, x1 = xs[None, :-1], xs[None, 1:]
    sums = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = ((y1 - y0) * (x1 - x0)).clamp(min=1).unsqueeze(-1).float()
    return sums / area


def text_axes(texts: Sequence[str], names: Sequence[str], dim: int, other: int,
              device) -> torch.Tensor:
    """``[M, dim]`` text embeddings: a colour word -> its axis; a scene word -> axis
    ``other``; anything else -> every colour axis (``0 .. other-1``)."""
    out = torch.zeros(len(texts), dim, device=device)
    for row, text in enumerate(texts):
        words = set(re.findall(r"[a-z]+", text.lower()))
        colours = [i for i, name in enumerate(names) if name in words]
        if colours:
            out[row, colours] = 1.0
        elif words & SCENE_WORDS:
            out[row, other] = 1.0
        else:
            out[row, :other] = 1.0
    return out


class ColorEncoder:
    """Colour-histogram encoder with the :class:`~clip_perception.core.encoder.Encoder` API."""

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
        index = palette_index(images, self._palette)
        return class_fractions(index.reshape(index.shape[0], -1), self.dim)

    @torch.inference_mode()
    def encode_dense(self, image: torch.Tensor) -> torch.Tensor:
        """``[1, 3, H, W]`` -> ``[h, w, K+1]``: the colour fractions of each
        :data:`DENSE_PATCH`-pixel cell (H and W divided evenly into h x w cells)."""
        return cell_fractions(palette_index(image, self._palette)[0], self.dim, DENSE_PATCH)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Colour words -> their palette axes; scene words -> "other"; else all colours."""
        self.text_calls += 1
        return text_axes(texts, self.names, self.dim, self.dim - 1, self.device)


def factory(device: torch.device | str = "cpu") -> ColorEncoder:
    """Entry point for ``model:=clip_perception.testing.color_encoder:factory``."""
    return ColorEncoder(device=device)
