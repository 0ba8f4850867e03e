"""An encoder of a user's own, as a ROS user writes one: a module outside
clip_perception, importable only through ``PYTHONPATH`` (a sourced colcon
workspace). It is the colour encoder, except that it raises on an all-black
crop (a stand-in for a model's own error on one request) and takes
:data:`SLOW_SECONDS` longer on a frame of :data:`SLOW_GREY` (to keep the model busy)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

MODULE = "cp_user_encoder"
SPEC = f"{MODULE}:make"
MESSAGE = "cp_user_encoder refuses an all-black crop"
SLOW_GREY, SLOW_SECONDS = 7, 1.5
SOURCE = f'''"""A user's encoder (written by clip_perception's tests)."""
import time

from clip_perception.testing import color_encoder


class Refusing:
    def __init__(self, inner):
        self.inner = inner
        self.input_size = inner.input_size
        self.logit_scale = inner.logit_scale
        self.device = inner.device

    def encode_images(self, images):
        if bool((images.flatten(1).amax(1) == 0).any()):
            raise ValueError("{MESSAGE}")
        if bool(((images - {SLOW_GREY} / 255).abs() < 1e-3).all()):
            time.sleep({SLOW_SECONDS})
        return self.inner.encode_images(images)

    def encode_texts(self, texts):
        return self.inner.encode_texts(texts)


def make(device="cpu"):
    return Refusing(color_encoder.factory(device))
'''


def write(directory: Path) -> Path:
    """The module in ``directory`` (not importable until that is on the path)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{MODULE}.py").write_text(SOURCE)
    return directory


def load(directory: Path):
    """The same encoder in this process, imported from ``directory``."""
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    sys.modules.pop(MODULE, None)
    return importlib.import_module(MODULE).make("cpu")
