"""Upload a frame once, cut every window from it on the device, encode them in one pass.

All windows of a frame are cropped and resized in a single call of
torchvision's ``roi_align`` op, the way NanoOWL batches its ROIs, so the
encoder sees one ``[K, 3, S, S]`` batch and no Python loop runs per window.
:func:`encode_windows_of` is the one place that does "normalise the frame if
the encoder can, crop, encode" for the detector and the served model alike.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..io.image_formats import Frame

# roi_align(input, rois, spatial_scale, height, width, sampling_ratio, aligned)
RoiAlign = Callable[[torch.Tensor, torch.Tensor, float, int, int, int, bool], torch.Tensor]


def _torchvision_kernel() -> RoiAlign | None:
    """torchvision's compiled ``roi_align`` op, loaded without its Python package.

    ``import torchvision`` imports ``torch._dynamo`` (through ``torchvision.ops``),
    which costs as much start-up time as torch itself; the op is the same either
    way. None where the extension cannot be found or loaded.
    """
    spec = importlib.util.find_spec("torchvision")
    folders = (spec.submodule_search_locations or []) if spec else []
    candidates = (Path(folder, stem + suffix) for folder in folders
                  for stem in ("_C_stable", "_C")  # torchvision >= 0.24, older releases
                  for suffix in importlib.machinery.EXTENSION_SUFFIXES)
    library = next((path for path in candidates if path.is_file()), None)
    if library is None:
        return None
    try:
        torch.ops.load_library(str(library))
        return torch.ops.torchvision.roi_align
    except (OSError, RuntimeError, AttributeError):
        return None


@functools.cache
def _torchvision_ops() -> RoiAlign:
    """``torchvision.ops.roi_align`` (the Python package, imported once needed)."""
    from torchvision.ops import roi_align

    def call(image, rois, scale, height, width, ratio, aligned):
        return roi_align(image, rois, (height, width), scale, ratio, aligned)
    return call


@functools.cache
def roi_align_op() -> RoiAlign:
    """The roi_align this process uses: the compiled op, else ``torchvision.ops``."""
    return _torchvision_kernel() or _torchvision_ops()


class FrameUploader:
    """Moves frames to ``device`` as ``[1, 3, H, W]`` float32 RGB in [0, 1].

    The host buffer is wrapped without a copy. On CUDA the bytes go through a
    pinned staging buffer, reused while the frame size stays the same, and the
    upload is asynchronous; the next frame waits for it before reusing the
    buffer.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self._pinned: torch.Tensor | None = None
        self._uploaded = None  # torch.cuda.Event: the last upload has left the buffer

    def _host_tensor(self, frame: Frame) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only views are never written
            return torch.from_numpy(frame.pixels)

    def __call__(self, frame: Frame) -> torch.Tensor:
        host = self._host_tensor(frame)
        if self.device.type == "cuda":
            if self._uploaded is not None:
                self._uploaded.synchronize()
            if self._pinned is None or self._pinned.shape != host.shape:
                self._pinned = torch.empty(host.shape, dtype=torch.uint8, pin_memory=True)
            self._pinned.copy_(host)
            pixels = self._pinned.to(self.device, non_blocking=True)
            self._uploaded = torch.cuda.Event()
            self._uploaded.record(torch.cuda.current_stream(self.device))
        else:
            pixels = host.to(self.device)
        pixels = pixels.permute(2, 0, 1)  # C H W, still a view
        if frame.order == "mono":
            pixels = pixels.expand(3, -1, -1)
        else:  # on the device, without an index tensor to upload (a host sync on CUDA)
            pixels = pixels[:3]
            if frame.order.startswith("bgr"):
                pixels = pixels.flip(0)
        return pixels.unsqueeze(0).float().div_(255.0)


def boxes_tensor(boxes: np.ndarray, device: torch.device) -> torch.Tensor:
    """``[K, 4]`` pixel boxes -> ``[K, 5]`` roi_align rows (batch index 0).

    Staged in pinned memory for CUDA: a copy from pageable memory would wait
    for the work already queued on the stream.
    """
    device = torch.device(device)
    rois = torch.zeros((len(boxes), 5), dtype=torch.float32, pin_memory=device.type == "cuda")
    rois[:, 1:] = torch.from_numpy(np.asarray(boxes, dtype=np.float32))
    return rois.to(device, non_blocking=True)


def crop_windows(image: torch.Tensor, boxes: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Cut and resize all ``boxes`` of ``image`` ``[1, 3, H, W]`` to ``[K, 3, size, size]``.

    Bilinear sampling with an adaptive number of samples per output pixel, so
    large windows are area-averaged (anti-aliased) rather than subsampled.
    """
    rois = boxes if isinstance(boxes, torch.Tensor) else boxes_tensor(boxes, image.device)
    if torch.are_deterministic_algorithms_enabled() and image.device.type != "cpu":
        roi_align = _torchvision_ops()  # its deterministic fallback for accelerators
    else:
        roi_align = roi_align_op()
    return roi_align(image, rois, 1.0, size, size, -1, True)


def encode_windows_of(encoder, parts: Sequence[tuple[torch.Tensor, np.ndarray]]
                      ) -> torch.Tensor:
    """Embeddings ``[sum K_i, D]`` of the windows ``boxes_i`` of each uploaded
    ``image_i`` (``[1, 3, H, W]`` RGB in [0, 1]), in one encoder pass.

    An encoder with ``normalize`` and ``encode_normalized`` gets each frame
    normalised before cropping (exact: roi_align's sample weights sum to 1), which
    costs one frame rather than K crops; any other gets ``encode_images`` of the crops.
    """
    normalize = getattr(encoder, "normalize", None)
    encode_normalized = getattr(encoder, "encode_normalized", None)
    fused = normalize is not None and encode_normalized is not None
    size = int(encoder.input_size)
    crops = [crop_windows(normalize(image) if fused else image, boxes, size)
             for image, boxes in parts if len(boxes)]
    batch = crops[0] if len(crops) == 1 else torch.cat(crops)
    return (encode_normalized if fused else encoder.encode_images)(batch)
