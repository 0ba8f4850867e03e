"""Known-answer encoders with injected faults, for node tests over DDS.

``model:=faulty_encoder:factory`` (test/ is on the node's PYTHONPATH):

* text embedding raises for any prompt containing "poison", and takes
  ``FAULTY_SLOW_TEXT`` s (default 1.5) for one containing "sloth" (a slow
  remote text encoder);
* with ``FAULTY_REPORT_ONCE=<kind>``, the first ProblemLog.report of that kind
  raises (a broken logger: a fault outside detect, in the worker thread);
* with ``FAULTY_SLOW_DRAWING=<seconds>``, drawing the debug image takes that long
  (a slow publisher, so results queue behind it);
* with ``FAULTY_IMAGE_DELAY=<seconds>``, each image batch takes that long;
* with ``FAULTY_GATE=<path>``, loading takes 0.2 s and, while that file exists,
  raises ModelUnreachableError (a model server not up yet: the node retries).
"""

from __future__ import annotations

import importlib
import os
import time

from clip_perception.core.runtime import log_throttle
from clip_perception.testing.color_encoder import ColorEncoder


class PoisonedTextEncoder(ColorEncoder):
    def encode_images(self, images):
        time.sleep(float(os.environ.get("FAULTY_IMAGE_DELAY", "0")))
        return super().encode_images(images)

    def encode_texts(self, texts):
        if any("poison" in t for t in texts):
            raise RuntimeError("text encoder failed on a poison prompt")
        if any("sloth" in t for t in texts):
            time.sleep(float(os.environ.get("FAULTY_SLOW_TEXT", "1.5")))
        return super().encode_texts(texts)


def _break_report_once(kind: str) -> None:
    original = log_throttle.ProblemLog.report
    armed = [True]

    def report(self, k, message):
        if k == kind and armed[0]:
            armed[0] = False
            raise RuntimeError(f"logger failed on {k}")
        return original(self, k, message)

    log_throttle.ProblemLog.report = report


def _slow_drawing(seconds: float) -> None:
    from clip_perception.ros.drawing import annotate

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return annotate(*args, **kwargs)

    for name in ("__main__", "clip_perception.ros.node", "clip_perception.ros.outputs"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "annotate"):  # wherever the node draws (`-m` runs it as __main__)
            module.annotate = slow


def factory(device="cpu"):
    gate = os.environ.get("FAULTY_GATE")
    if gate:
        from clip_perception.core.encoder import ModelUnreachableError

        time.sleep(0.2)
        if os.path.exists(gate):
            raise ModelUnreachableError(f"no model server yet ({gate} exists)")
    kind = os.environ.get("FAULTY_REPORT_ONCE")
    if kind:
        _break_report_once(kind)
    if os.environ.get("FAULTY_SLOW_DRAWING"):
        _slow_drawing(float(os.environ["FAULTY_SLOW_DRAWING"]))
    return PoisonedTextEncoder(device=device)


class _OutOfMemory(ColorEncoder):
    @property
    def input_size(self):  # where a real model would allocate its first tensors
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    @input_size.setter
    def input_size(self, value):
        pass


def bad_input_size(device="cpu"):
    """``model:=faulty_encoder:bad_input_size``: an encoder with an unusable input_size."""
    encoder = ColorEncoder(device=device)
    encoder.input_size = "two hundred and twenty-four"
    return encoder


def out_of_memory(device="cpu"):
    """``model:=faulty_encoder:out_of_memory``: the device runs out of memory at set-up."""
    return _OutOfMemory(device=device)
