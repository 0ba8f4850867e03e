"""The served encoder as a model of Triton's own Python backend (production: NVIDIA's
Triton container), written out by :mod:`.model_repository`.

Each model's ``1/model.py`` only imports :class:`TritonPythonModel` from here, so
the container runs the same code as ``python -m clip_perception.serve``:
``triton_python_backend_utils`` is the module the backend provides to its models.
"""

from __future__ import annotations

import json
from functools import partial

from ..core.model.loading import load_encoder
from ..core.remote import triton_protocol as protocol
from .detect_model import DetectModel, detect_responses
from .frame_cache import FrameCache
from .window_model import (
    TextEmbedder,
    WindowEmbedder,
    each_request,
    image_responses,
    text_responses,
)


class TritonPythonModel:
    """One instance of ``NAME_detect``, ``NAME_image`` or ``NAME_text``; the encoder is named
    by the model's config parameters (``model``, ``kind``, ``precision``, ``download_root``,
    and for the image model ``frame_cache_frames``, ``frame_cache_mb``).

    A model error fails only the requests that cause it: a dynamic batch that
    raises is run again request by request (:func:`.window_model.each_request`).

    Each instance of the Python backend is a process of its own, so each keeps its
    own frame cache: with several instances, a later pass over a frame that lands on
    another instance is answered ``FRAME_MISSING`` and the client sends the frame again.
    """

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        device = ("cpu" if args.get("model_instance_kind") != "GPU"
                  else f"cuda:{args['model_instance_device_id']}")
        encoder = load_encoder(params["model"], device, params.get("precision", "auto"),
                               params.get("download_root") or None)
        if params["kind"] == "detect":
            self._embedder, self._respond = DetectModel(encoder), detect_responses
        elif params["kind"] == "image":
            cache = FrameCache(
                int(params.get("frame_cache_frames", protocol.CACHE_FRAMES)),
                int(float(params.get("frame_cache_mb", protocol.CACHE_MB)) * 2**20))
            self._embedder = WindowEmbedder(encoder)
            self._respond = partial(image_responses, cache=cache)
        else:
            self._embedder, self._respond = TextEmbedder(encoder), text_responses
        self._inputs = [i["name"] for i in config["input"]]

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        arrays = [{name: pb_utils.get_input_tensor_by_name(r, name).as_numpy()
                   for name in self._inputs} for r in requests]
        return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(out))
                if isinstance(out, str) else pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, value) for name, value in out.items()])
                for out in each_request(self._respond, self._embedder, arrays)]
