"""The only uses of openai-clip's private API, kept here so a clip release that
changes them breaks one module and its test (test/test_clip_internals.py).

openai-clip has no public way to ask which file a model name downloads to, or
for its preprocessing without loading a checkpoint; everything else goes
through ``clip.available_models()``, ``clip.load()``, ``clip.tokenize()`` and
``clip.model``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch


def checkpoint_file(model: str) -> str | None:
    """The file name ``clip.load(model)`` downloads (``ViT-B-32.pt``), or None for an
    unknown name. Reads ``clip.clip._MODELS`` (private)."""
    from .encoders import import_clip

    url = import_clip().clip._MODELS.get(model)
    return os.path.basename(url) if url else None


def preprocess(size: int) -> Callable[[object], torch.Tensor]:
    """CLIP's preprocessing of a PIL image for input ``size`` (what ``clip.load``
    returns with the model), without a checkpoint. Calls ``clip.clip._transform``
    (private)."""
    from .encoders import import_clip

    return import_clip().clip._transform(size)
