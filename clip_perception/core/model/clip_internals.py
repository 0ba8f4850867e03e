"""Importing openai-clip, and the only uses of its private API, kept here so a clip
release that changes them breaks one module and its test (test/test_clip_internals.py).

openai-clip has no public way to ask which file a model name downloads to, or
for its preprocessing without loading a checkpoint; everything else goes
through ``clip.available_models()``, ``clip.load()``, ``clip.tokenize()`` and
``clip.model``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

from ..encoder import ModelLoadError


def checkpoint_file(model: str) -> str | None:
    """The file name ``clip.load(model)`` downloads (``ViT-B-32.pt``), or None for an
    unknown name. Reads ``clip.clip._MODELS`` (private)."""
    url = import_clip().clip._MODELS.get(model)
    return os.path.basename(url) if url else None


def preprocess(size: int) -> Callable[[object], torch.Tensor]:
    """CLIP's preprocessing of a PIL image for input ``size`` (what ``clip.load``
    returns with the model), without a checkpoint. Calls ``clip.clip._transform``
    (private)."""
    return import_clip().clip._transform(size)


def import_clip():
    """The ``clip`` module, or a :class:`ModelLoadError` that says how to install it."""
    try:
        with warnings.catch_warnings():  # clip imports the deprecated pkg_resources
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            import clip
    except ImportError as exc:
        raise ModelLoadError(
            f"OpenAI CLIP is not importable ({exc}); install it with "
            "`pip install openai-clip 'setuptools<81'`"
        ) from exc
    return clip


def default_download_root() -> str:
    """Where ``clip.load`` keeps downloaded weights (``~/.cache/clip``)."""
    return os.path.expanduser(os.path.join("~", ".cache", "clip"))
