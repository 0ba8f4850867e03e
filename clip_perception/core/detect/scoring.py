"""CLIP zero-shot scoring: prompt ensembles, cached text embeddings, softmax.

Every target competes in one softmax against the other targets, the
background prompts and a neutral prompt, so a target's probability is never
1.0 merely because it is the only class.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..encoder import Encoder


class TextBank:
    """Normalised, prompt-ensembled text embeddings, computed once per phrase.

    A new target costs one text pass for its prompts; background and neutral
    embeddings are computed on first use and kept. Thread-safe: the worker
    reads while another thread embeds new targets (which may clear the cache
    when it is full); the encoder runs outside the lock.
    """

    def __init__(self, encoder: Encoder, templates: Sequence[str], backgrounds: Sequence[str],
                 neutral: str, device: torch.device, max_entries: int = 256):
        self.encoder = encoder
        self.templates = tuple(templates)
        self.backgrounds = tuple(backgrounds)
        self.neutral = neutral
        self.device = device
        self.max_entries = max_entries
        self._cache: dict[str, torch.Tensor] = {}
        self._context: torch.Tensor | None = None
        self._lock = threading.RLock()

    def _embed(self, phrases: Sequence[str]) -> torch.Tensor:
        """One encoder call for all phrases x templates; ``[len(phrases), D]``."""
        prompts = [t.format(p) for p in phrases for t in self.templates]
        emb = self.encoder.encode_texts(prompts).float().to(self.device)
        emb = F.normalize(emb, dim=-1).view(len(phrases), len(self.templates), -1)
        return F.normalize(emb.mean(dim=1), dim=-1)

    def phrases(self, phrases: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``phrases``, encoding only those not cached yet.

        The encoder runs outside the lock: a slow (remote) text pass for new
        phrases does not hold up readers of cached ones (the worker's frames)."""
        phrases = list(phrases)
        with self._lock:
            missing = [p for p in dict.fromkeys(phrases) if p not in self._cache]
            if not missing:
                return torch.stack([self._cache[p] for p in phrases])
            if len(self._cache) + len(missing) > self.max_entries:
                missing = list(dict.fromkeys(phrases))  # it starts over: embed them all
        embedded = dict(zip(missing, self._embed(missing)))
        with self._lock:
            if len(self._cache) + len(embedded) > self.max_entries:
                self._cache.clear()
            self._cache.update(embedded)
            out = [embedded[p] if p in embedded else self._cache.get(p) for p in phrases]
        if any(e is None for e in out):  # another thread started the cache over meanwhile
            rest = list(dict.fromkeys(p for p, e in zip(phrases, out) if e is None))
            embedded.update(zip(rest, self._embed(rest)))
            out = [embedded[p] if e is None else e for p, e in zip(phrases, out)]
        return torch.stack(out)

    def context(self) -> torch.Tensor:
        """Background prompts then the neutral prompt, ``[B + 1, D]``."""
        with self._lock:
            if self._context is None:
                self._context = self._embed([*self.backgrounds, self.neutral])
            return self._context

    def classes(self, targets: Sequence[str]) -> torch.Tensor:
        """All classes of the softmax: targets, backgrounds, neutral."""
        return torch.cat([self.phrases(targets), self.context()], dim=0)


def target_scores(image_embeddings: torch.Tensor, classes: torch.Tensor, n_targets: int,
                  logit_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window and target: the probability and the neutral-debiased logit.

    ``probs`` is softmax(logit_scale x cosine) over all classes (targets,
    backgrounds, neutral, in the order of :meth:`TextBank.classes`).
    ``evidence`` is the target's logit minus the neutral prompt's: how much
    more the window looks like the target than like "some object". It ranks
    windows where the target is small and every probability is low.
    Both are ``[N, n_targets]``.
    """
    images = F.normalize(image_embeddings.float(), dim=-1)
    logits = logit_scale * images @ classes.T
    probs = logits.softmax(dim=-1)[:, :n_targets]
    evidence = logits[:, :n_targets] - logits[:, -1:]
    return probs, evidence


class WindowScores(NamedTuple):
    """Per window and target, float64 ``[K, T]`` arrays from one encoder output.

    ``probs`` is what presence and ``score`` report. ``cosine`` and
    ``margin`` never saturate: with a target-vs-rest margin of 20 logits or
    more the probability rounds to 1.0 and ties, while the cosine keeps the
    order of the windows. Localization ranks windows by ``cosine`` only, so
    the box is the same under any strictly increasing transform of the
    encoder's cosines.
    """

    probs: np.ndarray  # softmax probability over all classes (= sigmoid(margin))
    evidence: np.ndarray  # target logit minus the neutral prompt's
    margin: np.ndarray  # target logit minus the logsumexp of every other class
    cosine: np.ndarray  # the target's cosine similarity


def window_scores(image_embeddings: torch.Tensor, classes: torch.Tensor, n_targets: int,
                  logit_scale: float) -> WindowScores:
    """:class:`WindowScores` of ``[N, D]`` image embeddings against ``classes`` (targets,
    backgrounds, neutral), computed in float64 from the encoder's output on."""
    images = F.normalize(image_embeddings.detach().to(torch.float64), dim=-1)
    texts = F.normalize(classes.detach().to(device=images.device, dtype=torch.float64), dim=-1)
    cosine = images @ texts.T
    logits = logit_scale * cosine
    n, width = logits.shape
    target = logits[:, :n_targets]
    # every class but the target itself: mask the target's own column per target
    own = torch.eye(n_targets, width, dtype=torch.bool, device=logits.device)
    others = logits[:, None, :].expand(n, n_targets, width).masked_fill(own, float("-inf"))
    margin = target - torch.logsumexp(others, dim=-1)
    probs = torch.sigmoid(margin)
    evidence = target - logits[:, -1:]

    def out(x: torch.Tensor) -> np.ndarray:
        return x.cpu().numpy().astype(np.float64)

    return WindowScores(out(probs), out(evidence), out(margin), out(cosine[:, :n_targets]))
