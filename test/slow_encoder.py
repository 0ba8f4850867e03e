"""A known-answer encoder that takes a fixed time per image batch.

Used by node tests that need inference to be slower than the input rate
(frame dropping, commands handled during inference). The node process
imports it as ``model:=slow_encoder:factory`` (test/ is on its PYTHONPATH).
"""

from __future__ import annotations

import os
import time

from clip_perception.testing.color_encoder import ColorEncoder


class SlowColorEncoder(ColorEncoder):
    def __init__(self, device, delay: float):
        super().__init__(device=device)
        self.delay = delay

    def encode_images(self, images):
        time.sleep(self.delay)
        return super().encode_images(images)


def factory(device="cpu"):
    """``SLOW_ENCODER_DELAY`` s per image batch (0.3); ``SLOW_ENCODER_LOAD`` s to load (0)."""
    time.sleep(float(os.environ.get("SLOW_ENCODER_LOAD", "0")))
    return SlowColorEncoder(device, float(os.environ.get("SLOW_ENCODER_DELAY", "0.3")))
