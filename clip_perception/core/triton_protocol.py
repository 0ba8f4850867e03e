"""The wire contract between ``python -m clip_perception.serve`` and the node's
Triton client (:mod:`clip_perception.core.triton_encoder`).

A served encoder ``NAME`` is two Triton models:

- ``NAME_image`` (dynamic batching): inputs ``frames`` UINT8 ``[B, H, W, 3]`` (RGB)
  and ``boxes`` FP32 ``[B, K, 4]`` (x0, y0, x1, y1 pixels, x1/y1 exclusive);
  outputs ``embeddings`` FP32 ``[B, K, D]`` and ``seconds`` FP32 ``[B, 1]`` (how long the
  execution that computed it took in the model: upload, crops and encoder). The
  server crops the windows from the frame on its own device (one upload, one
  ``roi_align``), so a 640x480 frame travels as 0.9 MB instead of 86 float crops
  (about 50 MB).
- ``NAME_text`` (no batching): input ``texts`` BYTES ``[M]`` (UTF-8); outputs
  ``embeddings`` FP32 ``[M, D]``, ``logit_scale`` FP32 ``[1]`` and
  ``input_size`` INT32 ``[1]`` (what the client needs to stand in for the encoder).

No torch, numpy or Triton import here: both sides share these names.
"""

from __future__ import annotations

IMAGE_SUFFIX = "_image"
TEXT_SUFFIX = "_text"
FRAMES = "frames"
BOXES = "boxes"
TEXTS = "texts"
EMBEDDINGS = "embeddings"
SECONDS = "seconds"
LOGIT_SCALE = "logit_scale"
INPUT_SIZE = "input_size"


def image_model(name: str) -> str:
    return name + IMAGE_SUFFIX


def text_model(name: str) -> str:
    return name + TEXT_SUFFIX
