"""The embedding of each found region, for the tracks' appearance memory.

One extra encoder pass over the found boxes (one or two per target) of a
frame: a few crops next to the tens the detection encoded, cut from the same
frame the same way (:func:`~.crops.encode_windows_of`, or a remote encoder's
``encode_windows``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..encoder import device_of
from ..io.image_formats import Frame
from .crops import FrameUploader, encode_windows_of
from .results import Box, Detection


def tracked_boxes(detection: Detection) -> list[Box]:
    """The regions tracking embeds, in order: per present target its box and its
    second box (if any), then the whole frame; none when no target is present."""
    boxes: list[Box] = []
    for target in detection.targets:
        if target.present:
            boxes.append(tuple(int(v) for v in target.box))
            if target.second_box is not None:
                boxes.append(tuple(int(v) for v in target.second_box))
    return boxes + [(0, 0, detection.width, detection.height)] if boxes else []


@torch.inference_mode()
def box_embeddings(encoder, frame: Frame, boxes: Sequence[Sequence[int]],
                   uploader: FrameUploader | None = None) -> np.ndarray:
    """Unit embeddings ``[K, D]`` (float64) of ``boxes`` (x0, y0, x1, y1) of ``frame``."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if not len(boxes):
        return np.zeros((0, 0))
    encode_windows = getattr(encoder, "encode_windows", None)
    if encode_windows is not None:  # a remote encoder crops where it runs
        emb = encode_windows(frame, boxes)
    else:
        uploader = uploader or FrameUploader(device_of(encoder))
        emb = encode_windows_of(encoder, [(uploader(frame), boxes)])
    emb = torch.as_tensor(emb).float()
    emb = torch.nn.functional.normalize(emb, dim=-1)
    return emb.cpu().numpy().astype(np.float64)
