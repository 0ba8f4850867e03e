"""OpenAI CLIP behind the :class:`~clip_perception.core.encoder.Encoder` contract.

Device and precision choice, checkpoint reading (OpenAI archives or state
dicts) and :class:`ClipEncoder`, which normalises pixels on the device and runs
the towers at the chosen precision.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence

import torch

from ..encoder import ModelLoadError
from .clip_internals import checkpoint_file, default_download_root, import_clip

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# Measured on a 2-core CPU (ViT-B/32, bf16 and fp32): chunks of 8 to 43 crops
# run ~15% faster per crop than one batch of 86. A GPU takes one batch.
CPU_MAX_BATCH = 32


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


_ATTENTION_TENSORS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                      "in_proj_bias", "bias_k", "bias_v")


def cast_matmul_weights(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast conv, linear and attention weights and CLIP's projections to ``dtype``, in place.

    What ``clip.model.convert_weights`` does for fp16, for any dtype. Layer
    norms and embeddings stay fp32: CLIP's LayerNorm computes in fp32 and
    rejects low-precision parameters.
    """

    def cast(module: torch.nn.Module) -> None:
        tensors = []
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            tensors += [module.weight, module.bias]
        if isinstance(module, torch.nn.MultiheadAttention):
            tensors += [getattr(module, name) for name in _ATTENTION_TENSORS]
        tensors += [getattr(module, name, None) for name in ("text_projection", "proj")]
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                tensor.data = tensor.data.to(dtype)

    model.apply(cast)


class ClipEncoder:
    """OpenAI CLIP behind the :class:`Encoder` interface.

    Pixel normalisation (CLIP's mean and std) happens here, on the device.
    Conv, linear and attention weights are stored in ``dtype`` once, so no
    call casts them again; layer norms stay fp32. fp16 runs like ``clip.load``
    on CUDA. bf16 runs under autocast (softmax stays fp32) with the patch
    embedding kept fp32, so CLIP keeps its fp32 residual stream: the result
    equals autocast over fp32 weights.

    Besides :meth:`encode_images`, the pipeline may call :meth:`normalize` on
    the whole frame and :meth:`encode_normalized` on crops cut from it.
    Crops go through the model in chunks of ``max_batch`` (0: one batch;
    default :data:`CPU_MAX_BATCH` on the CPU, one batch elsewhere).
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                 max_batch: int | None = None):
        self.model = model.eval().float()
        self.device = device
        self.dtype = dtype
        if max_batch is None:
            max_batch = CPU_MAX_BATCH if device.type == "cpu" else 0
        self.max_batch = max(0, int(max_batch))
        if dtype != torch.float32:
            cast_matmul_weights(self.model, dtype)
        if dtype == torch.bfloat16:
            self.model.visual.conv1.float()  # sets model.dtype, the activations' dtype
        self.input_size = int(model.visual.input_resolution)
        self.logit_scale = float(min(model.logit_scale.detach().exp().item(), 100.0))
        self._mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
        self._image_tower = self.model.encode_image
        self._pad_to = 1

    def precision(self) -> contextlib.AbstractContextManager:
        """The context every forward pass runs in: bf16 autocast, else nothing."""
        if self.dtype == torch.bfloat16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def compile(self, cuda_graphs: bool = False, backend: str = "inductor",
                pad_to: int = 8) -> None:
        """Compile the image tower with ``torch.compile`` (static shapes).

        One graph per batch size (``dynamic=False``). Batches (or chunks) of
        ``pad_to`` crops or more are zero-padded to a multiple of it, so the
        varying window counts of refinement passes share a few graphs;
        smaller ones (one window at a time) run as they are. ``cuda_graphs``
        replays CUDA graphs (``mode="reduce-overhead"``, inductor backend
        only). Off by default: compiling takes a while on the first frames.
        """
        mode = "reduce-overhead" if cuda_graphs else None
        self._image_tower = torch.compile(self.model.encode_image, backend=backend,
                                          mode=mode, dynamic=False)
        self._pad_to = max(1, int(pad_to))

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype crops enter the model in."""
        return self.model.dtype

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] -> CLIP-normalised float32, any ``[N, 3, H, W]``."""
        return (images.float() - self._mean) / self._std

    @torch.inference_mode()
    def encode_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``[N, 3, S, S]`` -> float32 ``[N, D]`` (a tensor of its own)."""
        x = x.to(self.input_dtype)
        chunks = x.split(self.max_batch) if self.max_batch else (x,)
        out = [self._encode_chunk(chunk) for chunk in chunks]
        return out[0] if len(out) == 1 else torch.cat(out)

    def _encode_chunk(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        pad = -n % self._pad_to if n >= self._pad_to else 0
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
        with self.precision():
            out = self._image_tower(x)
        # a copy: a CUDA graph overwrites its output on the next replay
        return out[:n].to(torch.float32, copy=True)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_normalized(self.normalize(images))

    def encode_dense(self, image: torch.Tensor) -> torch.Tensor:
        """``[1, 3, H, W]`` RGB in [0, 1] -> ``[h, w, D]`` patch embeddings (hybrid mode).

        See :mod:`clip_perception.core.model.dense_clip` (ClearCLIP for ViT, MaskCLIP for ResNet).
        """
        from .dense_clip import encode_dense

        return encode_dense(self, image)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        import clip

        tokens = clip.tokenize(list(texts), truncate=True).to(self.device)
        with self.precision():
            return self.model.encode_text(tokens).float()


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The state dict of a local CLIP checkpoint: OpenAI's TorchScript archive or a
    plain (possibly ``{"state_dict": ...}``-wrapped) state dict."""
    try:
        with warnings.catch_warnings():  # torch.jit.load is deprecated in recent torch
            warnings.simplefilter("ignore")
            return torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:
        pass  # not a TorchScript archive
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "visual.conv1.weight" not in state:
        raise ValueError("the file holds no CLIP state dict (no visual.conv1.weight)")
    return state


def build_clip(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The CLIP architecture the weights describe, holding them at full precision."""
    from clip.model import build_model

    model = build_model(dict(state)).float()  # build_model rounds weights to fp16...
    model.load_state_dict(state)              # ...so load them again as they are
    return model.eval()


def load_clip(
    model: str,
    device: torch.device,
    dtype: torch.dtype,
    download_root: str | None = None,
) -> ClipEncoder:
    """Load CLIP by name (``ViT-B/32``...) or from a local checkpoint file.

    Named models come from ``clip.load`` (from ``download_root``, or
    downloaded there). Local files may be OpenAI's TorchScript archives or
    plain state dicts; the architecture is built from the weights.
    """
    clip = import_clip()
    root = download_root or default_download_root()
    path = os.path.expanduser(model)
    try:
        if os.path.isfile(path):
            net = build_clip(read_checkpoint(path))
        elif model in clip.available_models():
            net, _ = clip.load(model, device="cpu", jit=False, download_root=root)
        elif model.startswith(("/", ".", "~")) or model.endswith((".pt", ".pth", ".bin")):
            raise ModelLoadError(
                f"model checkpoint '{model}' does not exist; give the path of a CLIP "
                "checkpoint (.pt) on this machine")
        else:
            raise ModelLoadError(
                f"unknown model '{model}'; use one of {', '.join(clip.available_models())}, "
                "the path of a local CLIP checkpoint, or 'module:factory' for your own encoder")
    except ModelLoadError:
        raise
    except Exception as exc:  # network, corrupt file, wrong architecture
        if os.path.isfile(path):
            hint = "Check that the file is a CLIP checkpoint (OpenAI .pt or a state dict)."
        else:
            file = checkpoint_file(model) or "the checkpoint"
            hint = (f"Named models are downloaded to {root} on first use. Offline, copy "
                    f"{file} there from a machine with network access, or give its path: "
                    f"model:=/path/to/{file}")
        reason = str(exc) or type(exc).__name__
        raise ModelLoadError(f"could not load CLIP model '{model}': {reason}. {hint}") from exc
    return ClipEncoder(net.to(device), device, dtype)


