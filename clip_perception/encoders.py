"""Image and text encoders: OpenAI CLIP, or any user factory.

An encoder has ``input_size`` (int), ``encode_images(images)`` taking a float
tensor ``[N, 3, S, S]`` of RGB in ``[0, 1]`` on its device and returning
``[N, D]``, ``encode_texts(list[str])`` returning ``[M, D]``, and optionally
``logit_scale`` (default 100). Embeddings need not be normalised; the
pipeline does that.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

DEFAULT_LOGIT_SCALE = 100.0
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says how to fix it."""


@runtime_checkable
class Encoder(Protocol):
    """What the pipeline needs from a vision-language model."""

    input_size: int

    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device '{device}' was asked for but CUDA is not available; use device:=cpu or auto"
        )
    return resolved


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX, where bf16 matmuls are about 2-3x faster."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32."""
    name = (precision or "auto").strip().lower()
    if name not in PRECISIONS:
        raise ModelLoadError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    if name == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if name == "fp16" and device.type == "cpu":
        raise ModelLoadError("fp16 is not supported on the CPU; use precision:=fp32 or bf16")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


class ClipEncoder:
    """OpenAI CLIP behind the :class:`Encoder` interface.

    Pixel normalisation (CLIP's mean and std) happens here, on the device.
    fp16 runs the model in half precision (as ``clip.load`` does on CUDA);
    bf16 uses autocast so layer norms and softmax stay in fp32.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype):
        self.model = model.eval()
        self.device = device
        self.dtype = dtype
        if dtype == torch.float16:
            self.model.half()
            self._weight_dtype = torch.float16
        else:
            self.model.float()
            self._weight_dtype = torch.float32
        self.input_size = int(model.visual.input_resolution)
        self.logit_scale = float(min(model.logit_scale.detach().exp().item(), 100.0))
        self._mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

    def _autocast(self):
        if self.dtype == torch.bfloat16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images.float() - self._mean) / self._std).to(self._weight_dtype)
        with self._autocast():
            return self.model.encode_image(x).float()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        import clip

        tokens = clip.tokenize(list(texts), truncate=True).to(self.device)
        with self._autocast():
            return self.model.encode_text(tokens).float()


def _clip_module():
    try:
        import clip  # noqa: F401  (openai-clip; imports pkg_resources)
    except ImportError as exc:
        raise ModelLoadError(
            f"OpenAI CLIP is not importable ({exc}); install it with "
            "`pip install openai-clip 'setuptools<81'`"
        ) from exc
    return clip


def default_download_root() -> str:
    """Where ``clip.load`` keeps downloaded weights (``~/.cache/clip``)."""
    return os.path.expanduser(os.path.join("~", ".cache", "clip"))


def load_clip(
    model: str,
    device: torch.device,
    dtype: torch.dtype,
    download_root: str | None = None,
) -> ClipEncoder:
    """Load CLIP by name (``ViT-B/32``...) or from a local checkpoint file.

    A checkpoint may be OpenAI's JIT archive or a plain state dict; both go
    through ``clip.load``, which also builds the architecture from the weights.
    """
    clip = _clip_module()
    root = download_root or default_download_root()
    path = os.path.expanduser(model)
    if os.path.isfile(path):
        source = path
    elif model in clip.available_models():
        source = model  # clip.load uses the file in `root`, or downloads it there
    else:
        looks_like_path = os.sep in model or model.endswith((".pt", ".pth", ".bin"))
        if looks_like_path:
            raise ModelLoadError(
                f"model checkpoint '{model}' does not exist; give the path of a CLIP "
                "checkpoint (.pt) on this machine"
            )
        raise ModelLoadError(
            f"unknown model '{model}'; use one of {', '.join(clip.available_models())}, "
            "the path of a local CLIP checkpoint, or 'module:factory' for your own encoder"
        )
    try:
        net, _ = clip.load(source, device="cpu", jit=False, download_root=root)
    except Exception as exc:  # network, corrupt file, wrong architecture
        hint = (
            f"could not load CLIP model '{model}': {exc}. "
            f"Named models are downloaded to {root} on first use; on an offline robot, "
            "copy the checkpoint there (e.g. ViT-B-32.pt) or set model:=/path/to/ViT-B-32.pt"
        )
        raise ModelLoadError(hint) from exc
    return ClipEncoder(net.to(device), device, dtype)


def load_factory(spec: str, device: torch.device):
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
    except Exception as exc:
        raise ModelLoadError(f"encoder factory '{spec}' failed: {exc}") from exc
    missing = [a for a in ("input_size", "encode_images", "encode_texts") if not hasattr(encoder, a)]
    if missing:
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
):
    """Load the encoder named by ``model``: a CLIP name, a checkpoint path or a factory.

    Raises:
        ModelLoadError: with a message that says how to fix the problem.
    """
    if not model or not model.strip():
        raise ModelLoadError("no model given; use e.g. model:=ViT-B/32 or a checkpoint path")
    model = model.strip()
    torch_device = resolve_device(device)
    if is_factory_spec(model):
        return load_factory(model, torch_device)
    return load_clip(model, torch_device, resolve_precision(precision, torch_device), download_root)


def logit_scale_of(encoder) -> float:
    """The encoder's softmax temperature, or CLIP's 100 when it has none."""
    return float(getattr(encoder, "logit_scale", DEFAULT_LOGIT_SCALE))


def device_of(encoder) -> torch.device:
    """The device the encoder wants its input on (CPU when it does not say)."""
    device = getattr(encoder, "device", None)
    return torch.device(device) if device is not None else torch.device("cpu")
