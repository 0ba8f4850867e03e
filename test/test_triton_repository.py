"""``clip_perception.serve --export-repository`` writes a standard model repository for
Triton's own Python backend (what ``serve`` runs, and NVIDIA's container in production);
its image model with a stand-in for the backend's utilities. ``test_triton_server.py``
serves it on the real backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import user_plugin

from clip_perception.serving.environment import REPO_ROOT
from clip_perception.testing import color_encoder, random_clip
from clip_perception.testing.scenes import make_scene

MODELS = {"color": ("clip_perception.testing.color_encoder:factory",
                    lambda: color_encoder.factory("cpu")),
          "tiny": ("clip_perception.testing.random_clip:tiny", lambda: random_clip.tiny("cpu"))}


def test_export_writes_the_layout_triton_expects(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "clip_perception.serve", "--export-repository", str(tmp_path),
         "--model", "ViT-B/32", "--name", "clip", "--instances", "2", "--max-batch", "4",
         "--frame-cache-frames", "5"],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ,
                                                            "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0, out.stderr
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["clip_detect/1/model.py", "clip_detect/config.pbtxt",
                     "clip_image/1/model.py", "clip_image/config.pbtxt",
                     "clip_text/1/model.py", "clip_text/config.pbtxt"]
    detect = (tmp_path / "clip_detect" / "config.pbtxt").read_text()
    for line in ('name: "clip_detect"', 'backend: "python"', "max_batch_size: 4",
                 "count: 2 kind: KIND_GPU", 'key: "kind" value: { string_value: "detect" }',
                 'name: "request" data_type: TYPE_STRING dims: [ 1 ] allow_ragged_batch: true',
                 'name: "detection" data_type: TYPE_STRING', "dynamic_batching"):
        assert line in detect
    image = (tmp_path / "clip_image" / "config.pbtxt").read_text()
    for line in ('name: "clip_image"', 'backend: "python"', "max_batch_size: 4",
                 "count: 2 kind: KIND_GPU", 'string_value: "ViT-B/32"', "dynamic_batching",
                 'name: "frame_ids" data_type: TYPE_UINT64 dims: [ 3 ]',
                 'name: "status" data_type: TYPE_INT32',
                 'key: "frame_cache_frames" value: { string_value: "5" }'):
        assert line in image
    text = (tmp_path / "clip_text" / "config.pbtxt").read_text()
    assert 'name: "clip_text"' in text and "max_batch_size: 0" in text
    assert "TritonPythonModel" in (tmp_path / "clip_image" / "1" / "model.py").read_text()
    # an exported repository imports from the container's Python, not from this machine's path
    assert 'key: "python_path" value: { string_value: "" }' in image + text


class Tensor:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def as_numpy(self):
        return self.value


@pytest.fixture
def backend_model(monkeypatch):
    """``make(spec, frame_cache_frames)``: the Python backend's image model for ``spec``,
    with a stand-in for ``triton_python_backend_utils`` (the module the backend gives
    its models; the real backend is served in the test above)."""
    import json
    import re
    import types

    from clip_perception.serving.model_repository import image_config
    from clip_perception.serving.python_backend import TritonPythonModel

    pb = types.SimpleNamespace(
        Tensor=Tensor, TritonError=str,
        get_input_tensor_by_name=lambda request, name: Tensor(name, request[name]),
        InferenceResponse=lambda output_tensors, error=None: types.SimpleNamespace(
            outputs={t.name: t.value for t in output_tensors}, error=error))
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)

    def make(spec, frame_cache_frames=64):
        config = image_config("c", spec, "KIND_CPU", 1, 8, 0, "auto", "",
                              frame_cache_frames=frame_cache_frames)
        params = {k: {"string_value": v} for k, v in
                  re.findall(r'key: "(\w+)" value: \{ string_value: "([^"]*)"', config)}
        inputs = re.findall(r'name: "(\w+)" data_type: TYPE_\w+ dims', config)[:3]
        model = TritonPythonModel()
        model.initialize({"model_config": json.dumps(
            {"parameters": params, "input": [{"name": n} for n in inputs]}),
            "model_instance_kind": "CPU"})
        return model

    return make


def image_request(frame, ids, boxes):
    from clip_perception.core.remote import triton_protocol as protocol

    return {protocol.FRAMES: frame, protocol.BOXES: boxes,
            protocol.FRAME_IDS: np.array([ids], np.uint64)}


def test_exported_image_model_keeps_frames_by_id_and_answers_missing_ones(backend_model):
    """The config's cache size is used, a frame sent once is answered by id, and an
    evicted one is answered FRAME_MISSING."""
    from clip_perception.core.remote import triton_protocol as protocol

    model = backend_model(MODELS["color"][0], frame_cache_frames=1)
    rng = np.random.default_rng(2)
    frames = [make_scene(rng, target_colour=c).image for c in ("red", "blue")]
    boxes = np.array([[[0, 0, 320, 240], [100, 100, 400, 300]]], np.float32)
    placeholder = np.zeros((1, 1, 1, 3), np.uint8)

    def ask(frame, ids):
        return model.execute([image_request(frame, ids, boxes)])[0].outputs

    sent = ask(frames[0][None], (3, 1, 1))
    by_id = ask(placeholder, (3, 1, 0))
    assert by_id[protocol.STATUS].tolist() == [[protocol.OK]]
    np.testing.assert_array_equal(by_id[protocol.EMBEDDINGS], sent[protocol.EMBEDDINGS])
    ask(frames[1][None], (4, 1, 1))  # a cache of one frame (from the config): evicts (3, 1)
    assert ask(placeholder, (3, 1, 0))[protocol.STATUS].tolist() == [[protocol.FRAME_MISSING]]


def test_a_model_error_fails_only_its_own_request_of_a_dynamic_batch(backend_model, tmp_path,
                                                                    monkeypatch):
    """Three requests in one execution, the model raises on the second: it alone gets
    the error (the model's message), the others their answers (before, all three failed)."""
    from clip_perception.core.remote import triton_protocol as protocol

    monkeypatch.syspath_prepend(str(user_plugin.write(tmp_path)))
    model = backend_model(user_plugin.SPEC)
    rng = np.random.default_rng(3)
    frames = [make_scene(rng, target_colour=c).image[None] for c in ("red", "blue")]
    boxes = np.array([[[0, 0, 320, 240], [100, 100, 400, 300]]], np.float32)
    batch = [image_request(frames[0], (1, 1, 1), boxes),
             image_request(np.zeros_like(frames[0]), (2, 1, 1), boxes),
             image_request(frames[1], (3, 1, 1), boxes)]
    answers = model.execute(batch)
    assert [a.error for a in answers] == [None, f"ValueError: {user_plugin.MESSAGE}", None]
    for i in (0, 2):
        alone = model.execute([batch[i]])[0]
        np.testing.assert_array_equal(answers[i].outputs[protocol.EMBEDDINGS],
                                      alone.outputs[protocol.EMBEDDINGS])


def test_serve_runs_tritonservers_python_backend_and_builds_its_command(tmp_path):
    """serve's flags reach tritonserver (addresses, ports, repository, backends); Triton's
    own Python backend is the only host (no --backend flag)."""
    from clip_perception.serving.backend_server import server_command
    from clip_perception.serving.triton_server import parse_args

    args = parse_args(["--model", "m", "--grpc-port", "9001", "--host", "0.0.0.0"])
    with pytest.raises(SystemExit):
        parse_args(["--backend", "pytriton"])
    command = server_command(Path("/bin/tritonserver"), tmp_path / "repo", tmp_path / "b",
                             args.host, args.http_port, args.grpc_port, args.metrics_port)
    assert command[0] == "/bin/tritonserver"
    for flag in (f"--model-repository={tmp_path / 'repo'}", f"--backend-directory={tmp_path / 'b'}",
                 "--grpc-address=0.0.0.0", "--grpc-port=9001", "--http-port=8000",
                 "--metrics-port=8002", "--log-verbose=0"):
        assert flag in command
