"""The server's detect model (``NAME_detect``): the whole detector per request, in plain
torch (no Triton import): testable anywhere.

A node sends a frame, its targets' phrases and its detector settings; this runs
:class:`~clip_perception.core.detect.detector.Detector` with the served encoder
and answers with the detection (:mod:`..core.remote.detection_wire`): one round
trip per frame instead of one per detector pass. The targets' text embeddings stay
in the detector's text bank between requests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..core.detect.box_embeddings import box_embeddings, tracked_boxes
from ..core.detect.crops import FrameUploader
from ..core.detect.detector import Detector
from ..core.io.image_formats import Frame
from ..core.remote import detection_wire as wire
from ..core.remote import triton_protocol as protocol


class DetectModel:
    """Runs the detector for requests of any client. Not thread-safe: one per
    server instance (each instance of the Python backend is a process)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.detector = Detector(encoder)
        self._uploader = FrameUploader(self.detector.device)

    def _use(self, config) -> Detector:
        if config != self.detector.config:
            self.detector.configure(config)  # text embeddings are kept unless prompts change
        return self.detector

    @torch.inference_mode()
    def __call__(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict]:
        """A dynamic batch of requests -> per request the detect model's outputs. Requests
        with the same settings and heatmap flag run as one ``detect_batch``, each frame
        with its own targets (one encoder pass per stage for all their frames)."""
        parsed = []
        for request in requests:
            raw = np.asarray(request[protocol.REQUEST]).reshape(-1)[0]
            doc = wire.parse_request(raw)
            frames = request[protocol.FRAMES]
            if frames.ndim != 4 or frames.shape[0] != 1 or frames.shape[3] != 3 \
                    or frames.dtype != np.uint8:
                raise ValueError(f"a detect request carries one uint8 [H, W, 3] frame, got "
                                 f"{frames.dtype} {list(frames.shape)}")
            doc["frame"] = Frame(np.ascontiguousarray(frames[0]), doc["order"])
            parsed.append(doc)
        began = time.perf_counter()
        answers: list[dict | None] = [None] * len(parsed)
        groups: dict[tuple, list[int]] = {}
        for i, doc in enumerate(parsed):
            if doc["prepare"]:
                detector = self._use(doc["config"])
                detector.prepare(doc["targets"])
                answers[i] = wire.encode_detection(detector.detect(doc["frame"], targets=()))
                continue
            groups.setdefault((doc["config"], doc["heatmap"]), []).append(i)
        for (config, heat), members in groups.items():
            detector = self._use(config)
            frames = [parsed[i]["frame"] for i in members]
            detections = (detector.detect_batch(frames, with_heatmap=heat,
                                                targets_each=[parsed[i]["targets"]
                                                              for i in members])
                          if len(frames) > 1 else
                          [detector.detect(frames[0], parsed[members[0]]["targets"],
                                           with_heatmap=heat)])
            for i, detection in zip(members, detections):
                embeddings = None
                if parsed[i]["embed_boxes"]:
                    boxes = tracked_boxes(detection)
                    embeddings = (box_embeddings(self.encoder, parsed[i]["frame"], boxes,
                                                 self._uploader)
                                  if boxes else np.zeros((0, 1)))
                answers[i] = wire.encode_detection(detection, embeddings)
        seconds = np.full((1, 1), time.perf_counter() - began, np.float32)
        return [{**answer, protocol.SECONDS: seconds} for answer in answers]


def detect_responses(model: DetectModel,
                     requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict]:
    """``respond`` for :func:`.window_model.each_request`."""
    return model(requests)
