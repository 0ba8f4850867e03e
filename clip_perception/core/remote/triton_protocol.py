"""The wire contract between ``python -m clip_perception.serve`` and the node's
Triton client (:mod:`clip_perception.core.remote.triton_encoder`).

A served encoder ``NAME`` is three Triton models:

- ``NAME_image`` (dynamic batching): inputs ``frames`` UINT8 ``[B, H, W, 3]`` (RGB),
  ``frame_ids`` UINT64 ``[B, 3]`` (the client's id, the frame's id, and 1 if ``frames``
  carries the frame, 0 if it names it by id only) and ``boxes`` FP32
  ``[B, K, 4]`` (x0, y0, x1, y1 pixels, x1/y1 exclusive); outputs ``embeddings`` FP32
  ``[B, K, D]``, ``status`` INT32 ``[B, 1]`` and ``seconds`` FP32 ``[B, 1]`` (how long the
  execution that computed it took in the model: upload, crops and encoder). The
  server crops the windows from the frame on its own device (one upload, one
  ``roi_align``), so a 640x480 frame travels as 0.9 MB instead of 86 float crops
  (about 50 MB).

  **Each frame travels once.** The server keeps the frames it received in a small
  bounded LRU keyed by ``frame_ids`` (unless the frame id is :data:`UNCACHED`). A later
  request for the same frame (the detector's refine pass) sends the ids with the
  flag 0, its boxes and a 1x1 placeholder as ``frames``. If the server no longer holds that
  frame (restarted, or evicted by other clients' frames), that item's ``status`` is
  :data:`FRAME_MISSING` (its embeddings are zeros, D may be 1) and the client sends it again with
  the frame. Ids are chosen by the client: a random 64-bit client id per
  connection and a random 64-bit id per frame.
- ``NAME_detect`` (dynamic batching): the whole detector on the server, one request
  per frame. Inputs ``frames`` UINT8 ``[1, H, W, 3]`` (the frame's pixels in its own
  order, RGB or BGR) and ``request`` BYTES ``[1, 1]``: JSON with ``order``, ``targets``
  (phrases; the server keeps their text embeddings), ``config`` (every
  ``DetectorConfig`` field), ``heatmap`` (bool), ``embed_boxes`` (bool: the found
  regions' embeddings for tracking) and ``prepare`` (bool: only embed the targets, the
  frame is a 1x1 placeholder). Outputs ``detection`` BYTES ``[1, 1]`` (JSON: the frame's
  size, crops, per target its presence, scores and boxes), ``windows`` INT32 ``[1, K, 4]``,
  ``window_scores`` FP64 ``[1, T, K]``, ``heatmaps`` FP64 ``[1, T or 0, h, w]`` (at the
  heatmap cell's resolution), ``box_embeddings`` FP32 ``[1, M, D]`` (unit rows, the
  boxes of :func:`~clip_perception.core.detect.box_embeddings.tracked_boxes`) and
  ``seconds``. The codec is :mod:`.detection_wire`.
- ``NAME_text`` (no batching): input ``texts`` BYTES ``[M]`` (UTF-8); outputs
  ``embeddings`` FP32 ``[M, D]``, ``logit_scale`` FP32 ``[1]`` and
  ``input_size`` INT32 ``[1]`` (what the client needs to stand in for the encoder).

No torch, numpy or Triton import here: both sides share these names.
"""

from __future__ import annotations

IMAGE_SUFFIX = "_image"
TEXT_SUFFIX = "_text"
DETECT_SUFFIX = "_detect"
REQUEST = "request"
DETECTION = "detection"
WINDOWS = "windows"
WINDOW_SCORES = "window_scores"
HEATMAPS = "heatmaps"
BOX_EMBEDDINGS = "box_embeddings"
FRAMES = "frames"
FRAME_IDS = "frame_ids"
BOXES = "boxes"
TEXTS = "texts"
EMBEDDINGS = "embeddings"
STATUS = "status"
SECONDS = "seconds"
LOGIT_SCALE = "logit_scale"
INPUT_SIZE = "input_size"

OK = 0
FRAME_MISSING = 1  # the request named a frame the server does not hold: send it again
UNCACHED = 0  # a frame id the server does not keep (one-off images)
# the columns of ``frame_ids``
CLIENT, FRAME, SENT = 0, 1, 2
ID_COLUMNS = 3

# the server's frame cache, unless its flags say otherwise
CACHE_FRAMES = 64
CACHE_MB = 256


def image_model(name: str) -> str:
    return name + IMAGE_SUFFIX


def text_model(name: str) -> str:
    return name + TEXT_SUFFIX



def detect_model(name: str) -> str:
    return name + DETECT_SUFFIX
