"""A family of known-answer colour encoders with different response curves.

Every member sees an image as :mod:`~clip_perception.testing.color_encoder`
does (the share of its pixels near each palette colour, the rest "other")
and differs in how a colour's share becomes a cosine similarity, which is
what makes localization easy or hard:

* ``linear``: the cosine with a colour's text is the colour's share of the
  window; "other" likewise for scene words.
* ``concave``: strongly concave, saturates early: a window a quarter covered
  by the object scores almost as high as one it fills (as CLIP does).
* ``high_background`` / ``low_background``: linear target response, but the
  similarity to scene words is a constant (0.5 / 0.05) whatever the window
  holds.
* ``noisy``: linear plus pseudo-random noise (sigma 0.04 per dimension), a
  fixed function of the window's content and the seed, so runs repeat.
* ``clip_like``: concave, and every embedding shares a common direction, so
  all cosines sit in a narrow band (about 0.88 to 1.0) and the logit scale
  is CLIP's 100.

The members below widen the family to what real encoders do (margins of the
target over every other class from about 1 to 60 logits, convex responses,
crowding, unnormalised embeddings):

* ``faint``: linear, logit scale 4: an object filling the window beats every
  other class by about 1 logit (probability about 0.7).
* ``sharp``: linear, logit scale 100, no common direction: about 60 logits, so
  the probabilities of most windows on the object round to exactly 1.0.
* ``convex``: share squared: a small object barely moves a large window.
* ``crowded``: concave, and other colours in the window lower the target's
  cosine (by 0.8 x their share), as clutter lowers CLIP's.
* ``unnormalised``: linear plus noise, with image and text embeddings whose
  norms vary (0.2 to 5): the pipeline's normalisation has work to do.
* ``shifted``: convex-ish (share^1.5), a common direction of weight 0.7 and
  logit scale 50: cosines in a band of about 0.5 to 1.0.

:func:`transformed` wraps any member in a strictly increasing transform of
its cosines (the box must not move).

Each has the encoder contract (``input_size``, ``encode_images``,
``encode_texts``, ``logit_scale``) and the dense one (``encode_dense``).
Load one as ``model:=clip_perception.testing.known_answer:concave`` or by its
name through :func:`load` / the evaluation tool's ``--encoder``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from .color_encoder import (
    DENSE_PATCH,
    PALETTE,
    cell_fractions,
    class_fractions,
    dense_grid,
    even_edges,
    palette_index,
    text_axes,
)

Curve = Callable[[torch.Tensor], torch.Tensor]


def linear_curve(share: torch.Tensor) -> torch.Tensor:
    return share


def concave_curve(share: torch.Tensor) -> torch.Tensor:
    """1 - (1 - share)^8: 0.57 at a tenth, 0.90 at a quarter, 0.996 at half."""
    return 1.0 - (1.0 - share).clamp(0.0, 1.0) ** 8


def convex_curve(share: torch.Tensor) -> torch.Tensor:
    """share^2: 0.01 at a tenth, 0.06 at a quarter, 0.25 at half."""
    return share.clamp(0.0, 1.0) ** 2


def power_curve(power: float) -> Curve:
    """share^power (convex for power > 1)."""
    def curve(share: torch.Tensor) -> torch.Tensor:
        return share.clamp(0.0, 1.0) ** power
    return curve


@dataclass(frozen=True)
class Response:
    """How a member turns colour shares into cosines.

    Attributes:
        curve: colour share -> cosine with that colour's text (before the
            vector is normalised when the cosines' squares exceed 1).
        background: None: the cosine with scene words is the "other" share;
            a number: that constant, whatever the window holds.
        noise: standard deviation of the pseudo-random noise per dimension.
        common: weight of the direction every image and text shares (0: none).
        logit_scale: softmax temperature the pipeline uses.
        crowding: each colour's cosine is multiplied by ``1 - crowding x`` the
            share of the other colours in the window.
        warp: a strictly increasing map of [-1, 1] into [-1, 1], ``|warp(x)| <=
            |x|``, applied to every content cosine (a monotone transform of
            the cosines; None: none).
        unnormalised: image and text embeddings come out with norms that vary
            (0.2 to 5) with their content; the pipeline normalises them.
    """

    curve: Curve = linear_curve
    background: float | None = None
    noise: float = 0.0
    common: float = 0.0
    logit_scale: float = 10.0
    crowding: float = 0.0
    warp: Curve | None = None
    unnormalised: bool = False


MEMBERS: dict[str, Response] = {
    "linear": Response(),
    "concave": Response(curve=concave_curve),
    "high_background": Response(background=0.5),
    "low_background": Response(background=0.05),
    "noisy": Response(noise=0.04),
    "clip_like": Response(curve=concave_curve, common=0.94, logit_scale=100.0),
    "faint": Response(logit_scale=4.0),
    "sharp": Response(logit_scale=100.0),
    "convex": Response(curve=convex_curve, logit_scale=30.0),
    "crowded": Response(curve=concave_curve, crowding=0.8, logit_scale=30.0),
    "unnormalised": Response(noise=0.03, unnormalised=True, logit_scale=20.0),
    "shifted": Response(curve=power_curve(1.5), common=0.7, logit_scale=50.0),
}


class KnownAnswerEncoder:
    """A colour encoder whose response curve is given by a :class:`Response`.

    Embedding layout: one axis per palette colour, "other" (scene words), a
    residual axis that keeps every content vector at unit length, and the
    common axis.
    """

    def __init__(self, response: Response, name: str = "custom",
                 device: torch.device | str = "cpu", input_size: int = 64, seed: int = 0,
                 patch: int = DENSE_PATCH):
        self.name = name
        self.response = response
        self.device = torch.device(device)
        self.input_size = int(input_size)
        self.logit_scale = float(response.logit_scale)
        self.patch = int(patch)
        self.names = tuple(PALETTE)
        self.colours = len(self.names)
        self.dim = self.colours + 3  # colours, other, residual, common
        self._palette = torch.tensor(list(PALETTE.values()), dtype=torch.float32,
                                     device=self.device) / 255.0
        generator = torch.Generator().manual_seed(int(seed))
        inputs = self.colours + 1 + 3  # shares and mean RGB
        # high frequency on the shares (exact pixel counts), lower on the mean colour
        # (float sums), so the same content gives the same noise in crops and cells
        frequency = torch.tensor([4000.0] * (self.colours + 1) + [300.0] * 3)
        self._noise_weights = (torch.randn(self.dim, inputs, generator=generator) * frequency
                               ).to(self.device)
        self._noise_phase = (torch.rand(self.dim, generator=generator) * 2 * math.pi
                             ).to(self.device)
        self.text_calls = 0

    # --- the contract ---------------------------------------------------------
    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` RGB in [0, 1] -> ``[N, D]``."""
        index = palette_index(images, self._palette)
        shares = class_fractions(index.reshape(index.shape[0], -1), self.colours + 1)
        return self.embed(shares, images.float().mean(dim=(2, 3)))

    @torch.inference_mode()
    def encode_dense(self, image: torch.Tensor) -> torch.Tensor:
        """``[1, 3, H, W]`` RGB in [0, 1] -> ``[h, w, D]`` for cells of about
        ``patch`` pixels, H and W divided evenly into h x w cells."""
        index = palette_index(image, self._palette)[0]
        shares = cell_fractions(index, self.colours + 1, self.patch)
        rows, cols, _ = shares.shape
        means = _cell_means(image[0].float(), rows, cols)
        flat = self.embed(shares.reshape(-1, shares.shape[-1]), means.reshape(-1, 3))
        return flat.view(rows, cols, -1)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Colour words -> their axes; scene words -> "other"; else all colours evenly."""
        self.text_calls += 1
        out = text_axes(texts, self.names, self.dim, self.colours, self.device)
        out = torch.nn.functional.normalize(out, dim=-1)
        common = self.response.common
        if common:
            out = out * math.sqrt(1.0 - common**2)
            out[:, -1] = common
        if self.response.unnormalised:  # a norm of 0.2 to 5 that depends on the text
            out = out * torch.tensor([0.2 + (sum(map(ord, t)) % 49) / 10.0 for t in texts],
                                     device=out.device)[:, None]
        return out

    # --- the response ---------------------------------------------------------
    def embed(self, shares: torch.Tensor, mean_rgb: torch.Tensor) -> torch.Tensor:
        """``[N, K+1]`` colour and "other" shares (and ``[N, 3]`` mean RGB, which
        only seeds the noise) -> ``[N, D]`` unit embeddings."""
        r = self.response
        n = shares.shape[0]
        out = torch.zeros(n, self.dim, device=shares.device)
        out[:, : self.colours] = r.curve(shares[:, : self.colours])
        if r.crowding:
            colour = shares[:, : self.colours]
            rest = colour.sum(dim=1, keepdim=True) - colour
            out[:, : self.colours] *= (1.0 - r.crowding * rest).clamp(min=0.0)
        out[:, self.colours] = shares[:, -1] if r.background is None else r.background
        if r.noise:
            key = torch.cat([shares, mean_rgb], dim=1)
            wave = torch.sin(key @ self._noise_weights.T + self._noise_phase)
            out[:, : self.colours + 1] += r.noise * math.sqrt(2.0) * wave[:, : self.colours + 1]
        content = out[:, : self.colours + 1]
        squares = (content**2).sum(dim=1)
        scale = torch.where(squares > 1.0, squares.rsqrt(), torch.ones_like(squares))
        content = content * scale[:, None]
        if r.warp is not None:
            content = r.warp(content)
        out[:, : self.colours + 1] = content
        out[:, self.colours + 1] = (1.0 - (content**2).sum(dim=1)).clamp(min=0.0).sqrt()
        if r.common:
            out[:, : self.colours + 2] *= math.sqrt(1.0 - r.common**2)
            out[:, -1] = r.common
        if r.unnormalised:  # a norm of 0.2 to 5 that depends on the content
            out = out * (0.2 + 4.8 * torch.sigmoid(10.0 * (mean_rgb.sum(dim=1) - 1.2)))[:, None]
        return out

    def response_curve(self, shares: Sequence[float], colour: str = "red") -> torch.Tensor:
        """Cosine with ``colour``'s text of windows holding ``shares`` of that colour
        and the rest background (before any noise)."""
        s = torch.as_tensor(list(shares), dtype=torch.float32, device=self.device)
        fractions = torch.zeros(len(s), self.colours + 1, device=self.device)
        fractions[:, self.names.index(colour)] = s
        fractions[:, -1] = 1.0 - s
        quiet = KnownAnswerEncoder(replace(self.response, noise=0.0), device=self.device)
        emb = torch.nn.functional.normalize(
            quiet.embed(fractions, torch.zeros(len(s), 3, device=self.device)), dim=-1)
        return emb @ torch.nn.functional.normalize(quiet.encode_texts([colour]), dim=-1)[0]


def _cell_means(image: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``[3, H, W]`` -> ``[rows, cols, 3]`` mean colour per evenly divided cell."""
    _, height, width = image.shape
    integral = torch.zeros(height + 1, width + 1, 3, device=image.device)
    integral[1:, 1:] = image.permute(1, 2, 0).cumsum(0).cumsum(1)
    ys = torch.tensor(even_edges(height, rows), device=image.device)
    xs = torch.tensor(even_edges(width, cols), device=image.device)
    y0, y1, x0, x1 = ys[:-1, None], ys[1:, None], xs[None, :-1], xs[None, 1:]
    sums = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return sums / ((y1 - y0) * (x1 - x0)).clamp(min=1).unsqueeze(-1).float()


def family() -> tuple[str, ...]:
    """Names of every member, for ``--encoder`` and ``--all-encoders``."""
    return tuple(MEMBERS)


def load(name: str, device: torch.device | str = "cpu", **kwargs) -> KnownAnswerEncoder:
    """The member called ``name`` (see :func:`family`)."""
    if name not in MEMBERS:
        raise KeyError(f"unknown known-answer encoder {name!r}; choose from {', '.join(MEMBERS)}")
    return KnownAnswerEncoder(MEMBERS[name], name=name, device=device, **kwargs)


def transformed(name: str, warp: Curve, device: torch.device | str = "cpu",
                **kwargs) -> KnownAnswerEncoder:
    """Member ``name`` with every content cosine passed through ``warp`` (strictly
    increasing on [-1, 1], ``|warp(x)| <= |x|``): each cosine with a text is then a
    strictly increasing function of the member's own, the same for every window."""
    return KnownAnswerEncoder(replace(MEMBERS[name], warp=warp), name=f"{name}~warped",
                              device=device, **kwargs)


def spec(name: str) -> str:
    """The ``module:factory`` string that loads member ``name``."""
    if name not in MEMBERS:
        raise KeyError(f"unknown known-answer encoder {name!r}; choose from {', '.join(MEMBERS)}")
    return f"{__name__}:{name}"


def linear(device: torch.device | str = "cpu") -> KnownAnswerEncoder:
    return load("linear", device)


def concave(device: torch.device | str = "cpu") -> KnownAnswerEncoder:
    return load("concave", device)


def high_background(device: torch.device | str = "cpu") -> KnownAnswerEncoder:
    return load("high_background", device)


def low_background(device: torch.device | str = "cpu") -> KnownAnswerEncoder:
    return load("low_background", device)


def noisy(device: torch.device | str = "cpu") -> KnownAnswerEncoder:
    return load("noisy", device)


def clip_like(device: torch.device | str = "cpu") -> KnownAnswerEncoder:
    return load("clip_like", device)


def faint(device: torch.device | str = "cpu") -> KnownAnswerEncoder:
    return load("faint", device)


def sharp(device: torch.device | str = "cpu") -> KnownAnswerEncoder:
    return load("sharp", device)


def convex(device: torch.device | str = "cpu") -> KnownAnswerEncoder:
    return load("convex", device)


def crowded(device: torch.device | str = "cpu") -> KnownAnswerEncoder:
    return load("crowded", device)


def unnormalised(device: torch.device | str = "cpu") -> KnownAnswerEncoder:
    return load("unnormalised", device)


def shifted(device: torch.device | str = "cpu") -> KnownAnswerEncoder:
    return load("shifted", device)


__all__ = ["KnownAnswerEncoder", "MEMBERS", "Response", "dense_grid", "family", "load", "spec",
           "transformed", *MEMBERS]
