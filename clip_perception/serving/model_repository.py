"""Write a Triton model repository serving an encoder with Triton's Python backend:
``python -m clip_perception.serve --export-repository DIR``.

What ``serve`` runs, and for NVIDIA's Triton container in production. The layout::

    DIR/NAME_image/config.pbtxt    backend "python", dynamic batching, instance group
    DIR/NAME_image/1/model.py      from clip_perception.serving.python_backend import ...
    DIR/NAME_text/config.pbtxt
    DIR/NAME_text/1/model.py
    DIR/NAME_detect/config.pbtxt   the whole detector per frame (one request per frame)
    DIR/NAME_detect/1/model.py

The models speak :mod:`clip_perception.core.remote.triton_protocol`, so nodes use them
with ``model:=triton://HOST:8001/NAME`` exactly as with ``clip_perception.serve``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..core.remote import triton_protocol as protocol

MODEL_PY = '''"""A clip_perception encoder on Triton's Python backend.

The backend's stub ignores ``PYTHONPATH``; the config's ``python_path`` parameter
(written by ``clip_perception.serve``: its own import path) goes first on
``sys.path`` before anything of the package is imported.
"""
import json
import os
import sys


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        path = params.get("python_path", {}).get("string_value", "")
        sys.path[:0] = [p for p in path.split(os.pathsep) if p]
        from clip_perception.serving.python_backend import TritonPythonModel as Model

        self._model = Model()
        self._model.initialize(args)

    def execute(self, requests):
        return self._model.execute(requests)
'''


# Requests of any shape share a dynamic batch: frames of other sizes, a refine pass's
# own box count, a 1x1 placeholder. The Python backend gets each request's tensors
# as they are; the image model handles each request's frames and boxes on its own.
RAGGED = "allow_ragged_batch: true"


def _params(**values: str) -> str:
    for key, value in values.items():
        if '"' in value or "\\" in value or "\n" in value:
            raise ValueError(f"{key} must not contain '\"', '\\' or a newline: {value!r}")
    return "".join(f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
                   for k, v in values.items())


def image_config(name: str, model: str, kind: str, instances: int, max_batch: int,
                 max_queue_delay_us: int, precision: str, download_root: str,
                 frame_cache_frames: int = protocol.CACHE_FRAMES,
                 frame_cache_mb: float = protocol.CACHE_MB, python_path: str = "") -> str:
    return (f'name: "{name}_image"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
            'input [\n'
            f'  {{ name: "{protocol.FRAMES}" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] '
            f'{RAGGED} }},\n'
            f'  {{ name: "{protocol.FRAME_IDS}" data_type: TYPE_UINT64 '
            f'dims: [ {protocol.ID_COLUMNS} ] {RAGGED} }},\n'
            f'  {{ name: "{protocol.BOXES}" data_type: TYPE_FP32 dims: [ -1, 4 ] {RAGGED} }}\n]\n'
            'output [\n'
            f'  {{ name: "{protocol.EMBEDDINGS}" data_type: TYPE_FP32 dims: [ -1, -1 ] }},\n'
            f'  {{ name: "{protocol.STATUS}" data_type: TYPE_INT32 dims: [ 1 ] }},\n'
            f'  {{ name: "{protocol.SECONDS}" data_type: TYPE_FP32 dims: [ 1 ] }}\n]\n'
            f'dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n'
            f'instance_group [ {{ count: {instances} kind: {kind} }} ]\n'
            + _params(model=model, kind="image", precision=precision,
                      download_root=download_root, frame_cache_frames=str(frame_cache_frames),
                      frame_cache_mb=str(frame_cache_mb), python_path=python_path))


def detect_config(name: str, model: str, kind: str, instances: int, max_batch: int,
                  max_queue_delay_us: int, precision: str, download_root: str,
                  python_path: str = "") -> str:
    """``NAME_detect``: a frame and a JSON request in, the detection out (the whole
    detector on the server, one request per frame; see the protocol)."""
    return (f'name: "{name}_detect"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
            'input [\n'
            f'  {{ name: "{protocol.FRAMES}" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] '
            f'{RAGGED} }},\n'
            f'  {{ name: "{protocol.REQUEST}" data_type: TYPE_STRING dims: [ 1 ] {RAGGED} }}\n]\n'
            'output [\n'
            f'  {{ name: "{protocol.DETECTION}" data_type: TYPE_STRING dims: [ 1 ] }},\n'
            f'  {{ name: "{protocol.WINDOWS}" data_type: TYPE_INT32 dims: [ -1, 4 ] }},\n'
            f'  {{ name: "{protocol.WINDOW_SCORES}" data_type: TYPE_FP64 dims: [ -1, -1 ] }},\n'
            f'  {{ name: "{protocol.HEATMAPS}" data_type: TYPE_FP64 dims: [ -1, -1, -1 ] }},\n'
            f'  {{ name: "{protocol.BOX_EMBEDDINGS}" data_type: TYPE_FP32 dims: [ -1, -1 ] }},\n'
            f'  {{ name: "{protocol.SECONDS}" data_type: TYPE_FP32 dims: [ 1 ] }}\n]\n'
            f'dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n'
            f'instance_group [ {{ count: {instances} kind: {kind} }} ]\n'
            + _params(model=model, kind="detect", precision=precision,
                      download_root=download_root, python_path=python_path))


def text_config(name: str, model: str, kind: str, precision: str, download_root: str,
                python_path: str = "") -> str:
    return (f'name: "{name}_text"\nbackend: "python"\nmax_batch_size: 0\n'
            'input [ { name: "texts" data_type: TYPE_STRING dims: [ -1 ] } ]\n'
            'output [\n'
            '  { name: "embeddings" data_type: TYPE_FP32 dims: [ -1, -1 ] },\n'
            '  { name: "logit_scale" data_type: TYPE_FP32 dims: [ 1 ] },\n'
            '  { name: "input_size" data_type: TYPE_INT32 dims: [ 1 ] }\n]\n'
            f'instance_group [ {{ count: 1 kind: {kind} }} ]\n'
            + _params(model=model, kind="text", precision=precision,
                      download_root=download_root, python_path=python_path))


def write_repository(out: str | Path, model: str, name: str = "clip", device: str = "auto",
                     instances: int = 1, max_batch: int = 8, max_queue_delay_us: int = 0,
                     precision: str = "auto", download_root: str | None = None,
                     frame_cache_frames: int = protocol.CACHE_FRAMES,
                     frame_cache_mb: float = protocol.CACHE_MB,
                     python_path: Sequence[str] = ()) -> list[Path]:
    """Write the three models under ``out``; returns the files written.

    ``device``: ``cpu`` gives KIND_CPU instances, anything else KIND_GPU (Triton
    places them on its GPUs). ``python_path``: directories the models put first on
    their ``sys.path`` (``serve`` passes its own import path: the stub ignores
    ``PYTHONPATH``); none for a repository exported to a container.
    """
    path = os.pathsep.join(str(p) for p in python_path)
    kind = "KIND_CPU" if device.strip().lower() == "cpu" else "KIND_GPU"
    root = Path(out)
    configs = {
        f"{name}_image": image_config(name, model, kind, instances, max_batch,
                                      max_queue_delay_us, precision, download_root or "",
                                      frame_cache_frames, frame_cache_mb, path),
        f"{name}_text": text_config(name, model, kind, precision, download_root or "", path),
        f"{name}_detect": detect_config(name, model, kind, instances, max_batch,
                                        max_queue_delay_us, precision, download_root or "",
                                        path),
    }
    written = []
    for model_name, config in configs.items():
        (root / model_name / "1").mkdir(parents=True, exist_ok=True)
        for path, text in ((root / model_name / "config.pbtxt", config),
                           (root / model_name / "1" / "model.py", MODEL_PY)):
            path.write_text(text)
            written.append(path)
    return written
