"""A :class:`~clip_perception.core.detect.results.Detection` on the wire, both ways.

The server's detect model (``NAME_detect``, see :mod:`.triton_protocol`) answers each
frame with one JSON document for the per-target results and a few small arrays: the
coarse windows, each target's window scores, the heatmaps at their cell resolution
(only when asked; float64, as the 3D stage weights with them) and the found regions'
embeddings (for tracking). Plain numpy and json: both the node and the server import
this.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from ..detect.config import DetectorConfig
from ..detect.results import Detection, TargetResult
from . import triton_protocol as protocol


def _box(value) -> tuple[int, int, int, int] | None:
    return None if value is None else tuple(int(v) for v in value)


def request_json(order: str, targets, config: DetectorConfig, heatmap: bool = False,
                 embed_boxes: bool = True, prepare: bool = False) -> bytes:
    """The ``request`` input of one detect request."""
    return json.dumps({"order": order, "targets": list(targets), "config": asdict(config),
                       "heatmap": bool(heatmap), "embed_boxes": bool(embed_boxes),
                       "prepare": bool(prepare)}).encode("utf-8")


def parse_request(data: bytes | str) -> dict:
    """``request_json``'s document, with ``config`` a validated :class:`DetectorConfig`
    (raises :class:`~..detect.config.ConfigError` or ``ValueError`` on a bad one)."""
    doc = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    doc["config"] = DetectorConfig(**doc["config"])
    doc["targets"] = tuple(str(t) for t in doc["targets"])
    if doc["order"] not in ("rgb", "bgr"):
        raise ValueError(f"a detect request's frame must be rgb or bgr, not {doc['order']!r}")
    return doc


def encode_detection(detection: Detection,
                     embeddings: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The detect model's outputs for one request (each with its batch dim of 1)."""
    doc = {"width": detection.width, "height": detection.height, "crops": detection.crops,
           "heatmap_cell": detection.heatmap_cell, "refined": bool(detection.refined),
           "dense_passes": int(detection.dense_passes),
           "embedded": embeddings is not None,
           "targets": [{"phrase": t.phrase, "present": bool(t.present), "score": float(t.score),
                        "frame_score": float(t.frame_score), "box": list(t.box),
                        "best_window": list(t.best_window),
                        "second_box": None if t.second_box is None else list(t.second_box),
                        "second_score": float(t.second_score)} for t in detection.targets]}
    windows = np.asarray(detection.windows, np.int32).reshape(-1, 4)
    scores = np.array([t.window_scores for t in detection.targets], np.float64).reshape(
        len(detection.targets), len(windows))
    if detection.heatmaps:
        heat = np.stack([np.asarray(h, np.float64) for h in detection.heatmaps])
    else:
        heat = np.zeros((0, 1, 1), np.float64)
    emb = (np.zeros((0, 1), np.float32) if embeddings is None or not len(embeddings)
           else np.asarray(embeddings, np.float32).reshape(len(embeddings), -1))
    return {protocol.DETECTION: np.array([[json.dumps(doc).encode("utf-8")]], dtype=object),
            protocol.WINDOWS: windows[None], protocol.WINDOW_SCORES: scores[None],
            protocol.HEATMAPS: heat[None], protocol.BOX_EMBEDDINGS: emb[None]}


def decode_detection(out: dict[str, np.ndarray]) -> Detection:
    """The :class:`Detection` of one answer of the detect model (``encode_detection``'s)."""
    raw = out[protocol.DETECTION].reshape(-1)[0]
    doc = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    windows = np.array(out[protocol.WINDOWS][0], np.int64).reshape(-1, 4)
    scores = np.array(out[protocol.WINDOW_SCORES][0], np.float64)
    heat = np.array(out[protocol.HEATMAPS][0], np.float64)
    targets = [TargetResult(phrase=t["phrase"], present=bool(t["present"]), score=t["score"],
                            frame_score=t["frame_score"], box=_box(t["box"]),
                            best_window=_box(t["best_window"]),
                            window_scores=scores[i], second_box=_box(t["second_box"]),
                            second_score=t["second_score"])
               for i, t in enumerate(doc["targets"])]
    embeddings = None
    if doc["embedded"]:
        embeddings = np.array(out[protocol.BOX_EMBEDDINGS][0], np.float32).astype(np.float64)
    return Detection(targets, windows, doc["width"], doc["height"], doc["crops"],
                     list(heat), doc["heatmap_cell"], doc["refined"], doc["dense_passes"],
                     box_embeddings=embeddings)
