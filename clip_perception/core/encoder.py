"""The encoder contract and its errors: what the pipeline needs from a model.

Imports nothing of this package, so every layer (the model loaders, the remote
client, the detector, the runtime loop) can depend on it without a cycle.

An encoder has ``input_size`` (int), ``encode_images(images)`` taking a float
tensor ``[N, 3, S, S]`` of RGB in ``[0, 1]`` on its device and returning
``[N, D]``, ``encode_texts(list[str])`` returning ``[M, D]``, and optionally
``logit_scale`` (default 100). Embeddings need not be normalised; the
pipeline does that. An encoder that also has ``normalize(images)`` and
``encode_normalized(x)`` gets the frame normalised once before cropping.
An encoder that has ``encode_windows(frame, boxes)`` (a remote one, e.g.
``triton://``) is handed the uint8 frame and the ``[K, 4]`` window boxes
instead of crops, crops where it runs and returns ``[K, D]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

DEFAULT_LOGIT_SCALE = 100.0


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says how to fix it."""


class ModelUnreachableError(ModelLoadError):
    """The model's server did not answer while loading: trying again later may succeed
    (a node keeps running and loads the model once the server answers)."""


class EncoderUnavailableError(RuntimeError):
    """A remote encoder could not answer this call (server down, timed out or refused).

    Raised per call, never fatal: the next call tries again, so a caller counts
    the failure, logs it (throttled) and carries on.
    """


class EncoderRequestError(RuntimeError):
    """A remote encoder's server answered, but failed this call (the model raised:
    a bad shape, out of memory, a plugin's own error). Not an outage: the
    connection stays, other calls are unaffected; the message is the server's."""


@runtime_checkable
class Encoder(Protocol):
    """What the pipeline needs from a vision-language model (the contract a
    ``module:factory`` encoder meets; see the module docstring for the optional parts)."""

    input_size: int

    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


def logit_scale_of(encoder) -> float:
    """The encoder's softmax temperature, or CLIP's 100 when it has none."""
    return float(getattr(encoder, "logit_scale", DEFAULT_LOGIT_SCALE))


def device_of(encoder) -> torch.device:
    """The device the encoder wants its input on (CPU when it does not say)."""
    device = getattr(encoder, "device", None)
    return torch.device(device) if device is not None else torch.device("cpu")
