"""``load_encoder``: the one entry point from a ``model`` string to an encoder.

A CLIP name or checkpoint (:mod:`.clip_encoder`), ``module:factory`` (a user's own
encoder), or ``triton://host:port/name`` (:mod:`~clip_perception.core.remote.triton_encoder`).
"""

from __future__ import annotations

import importlib
import os

import torch

from ..encoder import Encoder, ModelLoadError, ModelUnreachableError
from .clip_encoder import load_clip, resolve_device, resolve_precision


def load_factory(spec: str, device: torch.device) -> Encoder:
    """Import ``module:factory`` and call ``factory(device=device)``."""
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(
            f"encoder factory '{spec}' could not be imported ({exc}); give 'module:function' "
            "where module is importable"
        ) from exc
    try:
        encoder = factory(device=device)
    except ModelUnreachableError:  # e.g. its server is not up yet: the node retries
        raise
    except Exception as exc:
        raise ModelLoadError(f"encoder factory '{spec}' failed: {exc}") from exc
    if not isinstance(encoder, Encoder):  # the Protocol's members, by name
        required = ("input_size", "encode_images", "encode_texts")
        missing = [a for a in required if not hasattr(encoder, a)]
        raise ModelLoadError(f"encoder from '{spec}' lacks {', '.join(missing)}")
    return encoder


def is_factory_spec(model: str) -> bool:
    """``pkg.module:factory`` (and not a Windows drive or an existing file)."""
    if ":" not in model or os.path.exists(os.path.expanduser(model)):
        return False
    module, _, attr = model.partition(":")
    return bool(module) and attr.isidentifier() and all(p.isidentifier() for p in module.split("."))


def load_encoder(
    model: str = "ViT-B/32",
    device: str | torch.device = "auto",
    precision: str = "auto",
    download_root: str | None = None,
) -> Encoder:
    """Load the encoder named by ``model``: a CLIP name, a checkpoint path, a factory,
    or ``triton://host:port/name`` (one served by ``python -m clip_perception.serve``).

    Raises:
        ModelLoadError: with a message that says how to fix the problem.
    """
    if not model or not model.strip():
        raise ModelLoadError("no model given; use e.g. model:=ViT-B/32 or a checkpoint path")
    model = model.strip()
    if model.startswith("triton://"):  # remote: the server chooses device and precision
        from ..remote.triton_encoder import load_triton_encoder

        return load_triton_encoder(model)
    torch_device = resolve_device(device)
    if is_factory_spec(model):
        return load_factory(model, torch_device)
    return load_clip(model, torch_device, resolve_precision(precision, torch_device), download_root)
