"""What the served models compute, in plain torch (no Triton import): testable anywhere.

:class:`WindowEmbedder` is the image model: frames and their window boxes in,
one embedding per window out. It crops exactly as the in-process detector does
(the frame uploaded once, normalised once when the encoder can, one
``roi_align``), so a remote encoder gives the same embeddings as a local one.
All windows of all frames in a dynamic batch go through the encoder in one pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..core.detect.crops import FrameUploader, encode_windows_of
from ..core.encoder import device_of, logit_scale_of
from ..core.io.image_formats import Frame
from ..core.remote import triton_protocol as protocol
from .frame_cache import FrameCache


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
        parts = [(self._uploader(Frame.from_rgb(np.ascontiguousarray(f))),
                  np.asarray(b, dtype=np.float32)) for f, b in zip(frames, boxes) if len(b)]
        out = encode_windows_of(self.encoder, parts).float().cpu().numpy()
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


def image_responses(embedder: WindowEmbedder, requests: Sequence[Mapping[str, np.ndarray]],
                    cache: FrameCache | None = None) -> list[dict[str, np.ndarray]]:
    """The image model: a dynamic batch of requests (each ``frames`` ``[b, H, W, 3]``,
    ``frame_ids`` ``[b, 3]`` and ``boxes`` ``[b, K, 4]``) -> per request ``embeddings``
    ``[b, K, D]``, ``status`` ``[b, 1]`` and ``seconds`` ``[b, 1]``, all frames in one
    encoder pass.

    Frames that come with a request are kept in ``cache`` (unless their frame id is
    ``UNCACHED``); an item whose ``SENT`` flag is 0 names its frame by ``frame_ids``
    instead, and an item whose frame ``cache`` no longer holds gets ``FRAME_MISSING``
    (see :mod:`..core.triton_protocol`)."""
    frames, boxes, items = [], [], []  # items: per request, its (status, index in frames)
    for request in requests:
        batch_frames, batch_boxes = request[protocol.FRAMES], request[protocol.BOXES]
        ids = request[protocol.FRAME_IDS] if protocol.FRAME_IDS in request.keys() else None
        statuses = []
        for i in range(len(batch_boxes)):
            key = None if ids is None else (int(ids[i][protocol.CLIENT]),
                                            int(ids[i][protocol.FRAME]))
            if ids is None or int(ids[i][protocol.SENT]):
                frame = batch_frames[i]
                if cache is not None and key is not None and key[1] != protocol.UNCACHED:
                    frame = cache.put(key, frame)
            else:
                frame = None if cache is None or key is None else cache.get(key)
            if frame is None:
                statuses.append((protocol.FRAME_MISSING, -1))
                continue
            statuses.append((protocol.OK, len(frames)))
            frames.append(frame)
            boxes.append(batch_boxes[i])
        items.append((statuses, batch_boxes.shape[1] if batch_boxes.ndim == 3 else 0))
    began = time.perf_counter()
    embeddings = embedder(frames, boxes) if frames else []
    seconds = np.float32(time.perf_counter() - began)
    # a missing item's embeddings are zeros, at least 1 wide
    dim = max((e.shape[1] for e in embeddings if e.ndim == 2 and e.shape[0]), default=1)
    responses = []
    for statuses, k in items:
        part = [embeddings[j] if code == protocol.OK and len(embeddings[j])
                else np.zeros((k, dim), np.float32) for code, j in statuses]
        size = len(statuses)
        responses.append({
            protocol.EMBEDDINGS: (np.stack(part).astype(np.float32) if part
                                  else np.zeros((0, k, dim), np.float32)),
            protocol.STATUS: np.array([[code] for code, _ in statuses], np.int32).reshape(size, 1),
            protocol.SECONDS: np.full((size, 1), seconds, np.float32)})
    return responses


def each_request(respond: Callable[[Any, Sequence], list], embedder,
                 requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict | str]:
    """``respond(embedder, requests)`` for a dynamic batch; if that raises, each request
    again on its own, so one bad request fails alone. A failed request's place holds
    its error message (``"ValueError: ..."``)."""
    try:
        return respond(embedder, requests)
    except Exception as exc:  # noqa: BLE001 - the model's error is the request's answer
        if len(requests) == 1:
            return [f"{type(exc).__name__}: {exc}"]
    out: list[dict | str] = []
    for request in requests:
        try:
            out.extend(respond(embedder, [request]))
        except Exception as exc:  # noqa: BLE001
            out.append(f"{type(exc).__name__}: {exc}")
    return out


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
