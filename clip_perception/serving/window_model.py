"""What the served models compute, in plain torch (no Triton import): testable anywhere.

:class:`WindowEmbedder` is the image model: frames and their window boxes in,
one embedding per window out. It crops exactly as the in-process detector does
(the frame uploaded once, normalised once when the encoder can, one
``roi_align``), so a remote encoder gives the same embeddings as a local one.
All windows of all frames in a dynamic batch go through the encoder in one pass.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..core import triton_protocol as protocol
from ..core.crops import FrameUploader, crop_windows
from ..core.encoders import device_of, logit_scale_of
from ..core.image_formats import Frame


class WindowEmbedder:
    """Embeds the windows of uint8 RGB frames with ``encoder``.

    Not thread-safe (it owns an upload buffer): give each server instance its own,
    sharing one encoder.
    """

    def __init__(self, encoder):
        self.encoder = encoder
        self.device = device_of(encoder)
        self.input_size = int(encoder.input_size)
        self._uploader = FrameUploader(self.device)

    def _crops(self, frame: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
        image = self._uploader(Frame.from_rgb(np.ascontiguousarray(frame)))
        normalize = getattr(self.encoder, "normalize", None)
        if normalize is not None and hasattr(self.encoder, "encode_normalized"):
            image = normalize(image)
        return crop_windows(image, np.asarray(boxes, dtype=np.float32), self.input_size)

    @torch.inference_mode()
    def __call__(self, frames: Sequence[np.ndarray],
                 boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``frames[i]`` ``[H, W, 3]`` uint8 RGB with ``boxes[i]`` ``[K_i, 4]`` ->
        ``[K_i, D]`` float32 per frame, from one encoder pass."""
        if len(frames) != len(boxes):
            raise ValueError(f"{len(frames)} frames but {len(boxes)} box sets")
        for frame in frames:
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"a frame must be uint8 [H, W, 3], got {frame.dtype} "
                                 f"{list(frame.shape)}")
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            return [np.zeros((0, 0), np.float32) for _ in counts]
        crops = torch.cat([self._crops(f, b) for f, b in zip(frames, boxes) if len(b)])
        if hasattr(self.encoder, "encode_normalized") and hasattr(self.encoder, "normalize"):
            embeddings = self.encoder.encode_normalized(crops)
        else:
            embeddings = self.encoder.encode_images(crops)
        out = embeddings.float().cpu().numpy()
        return list(np.split(out, np.cumsum(counts)[:-1]))


class TextEmbedder:
    """Strings in, embeddings out, with the encoder's logit scale and input size."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.logit_scale = logit_scale_of(encoder)
        self.input_size = int(encoder.input_size)

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode_texts(list(texts)).float().cpu().numpy()


def image_responses(embedder: WindowEmbedder,
                    requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The image model: a dynamic batch of requests (each ``frames`` ``[b, H, W, 3]`` and
    ``boxes`` ``[b, K, 4]``) -> per request ``embeddings`` ``[b, K, D]`` and ``seconds``
    ``[b, 1]``, all frames in one encoder pass."""
    frames, boxes, sizes = [], [], []
    for request in requests:
        batch_frames, batch_boxes = request[protocol.FRAMES], request[protocol.BOXES]
        sizes.append(len(batch_frames))
        frames.extend(batch_frames)
        boxes.extend(batch_boxes)
    began = time.perf_counter()
    embeddings = embedder(frames, boxes)
    seconds = np.float32(time.perf_counter() - began)
    responses, start = [], 0
    for size in sizes:
        part = embeddings[start:start + size]
        start += size
        responses.append({protocol.EMBEDDINGS: np.stack(part).astype(np.float32),
                          protocol.SECONDS: np.full((size, 1), seconds, np.float32)})
    return responses


def text_responses(embedder: TextEmbedder,
                   requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The text model: ``texts`` (UTF-8) -> ``embeddings``, ``logit_scale``, ``input_size``."""
    responses = []
    for request in requests:
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t)
                 for t in request[protocol.TEXTS].reshape(-1)]
        responses.append({
            protocol.EMBEDDINGS: embedder(texts).astype(np.float32),
            protocol.LOGIT_SCALE: np.array([embedder.logit_scale], np.float32),
            protocol.INPUT_SIZE: np.array([embedder.input_size], np.int32),
        })
    return responses
