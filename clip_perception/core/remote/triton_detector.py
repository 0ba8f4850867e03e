"""The detector on the server: one request per frame for ``model:=triton://...``.

:class:`TritonDetector` has the interface the inference loop and the node use of a
local :class:`~clip_perception.core.detect.detector.Detector` (``prepare``,
``set_targets``, ``configure``, ``detect``, ``config``, ``windows_for``...), but each
:meth:`~TritonDetector.detect` is one request to the server's ``NAME_detect`` model:
the frame (uint8, in its own RGB or BGR order), the targets' phrases and the settings
go out; the server runs the detector with its encoder, keeps the phrases' text
embeddings, and answers with the detection (:mod:`.detection_wire`), the found
regions' embeddings for tracking included. The server's answer is the in-process
detector's answer on the server's encoder.

Errors are the encoder's (:class:`.triton_encoder.TritonEncoder`, whose connection
this uses): a request the model failed raises
:class:`~clip_perception.core.encoder.EncoderRequestError`, a server that does not
answer :class:`~clip_perception.core.encoder.EncoderUnavailableError`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..detect.config import DetectorConfig
from ..detect.detector import Detector
from ..detect.results import Detection
from ..detect.windows import window_grid
from ..io.image_formats import Frame
from . import detection_wire as wire
from . import triton_protocol as protocol
from .triton_encoder import TritonEncoder

_PLACEHOLDER = np.zeros((1, 1, 1, 3), np.uint8)  # the frame of a prepare request
OUTPUTS = (protocol.DETECTION, protocol.WINDOWS, protocol.WINDOW_SCORES, protocol.HEATMAPS,
           protocol.BOX_EMBEDDINGS, protocol.SECONDS)


def _wire_frame(frame: Frame | np.ndarray) -> tuple[np.ndarray, str]:
    """The pixels to send and their order: RGB and BGR as they are, others as RGB."""
    if not isinstance(frame, Frame):
        frame = Frame.from_rgb(frame)  # as the local detector: uint8 (H, W, 3) or an error
    if frame.order in ("rgb", "bgr"):
        return np.ascontiguousarray(frame.pixels), frame.order
    return np.ascontiguousarray(frame.to_rgb()), "rgb"


class TritonDetector:
    """The detector's interface over a server's detect model. Thread-safe."""

    def __init__(self, encoder: TritonEncoder, config: DetectorConfig | None = None):
        self.encoder = encoder  # the connection; box embeddings fall back to its image model
        self.device = encoder.device
        self.logit_scale = encoder.logit_scale
        self.input_size = int(encoder.input_size)
        self.embed_boxes = True  # ask for the found regions' embeddings (tracking uses them)
        self._lock = threading.Lock()
        self._targets: tuple[str, ...] = ()
        self._grid_cache: dict[tuple, np.ndarray] = {}
        self.requests = 0  # detect requests answered
        self.configure(config or DetectorConfig())

    def configure(self, config: DetectorConfig) -> None:
        """Use ``config`` from the next frame on (it travels with each request)."""
        with self._lock:
            self.config = config
            self._grid_cache.clear()

    @property
    def hybrid(self) -> bool:
        """Hybrid mode was asked for (the server runs it if its encoder has ``encode_dense``)."""
        return self.config.mode == "hybrid"

    @property
    def targets(self) -> tuple[str, ...]:
        return self._targets

    def windows_for(self, width: int, height: int) -> np.ndarray:
        """The coarse windows for a frame size (as the server's detector cuts them)."""
        with self._lock:
            key = (width, height)
            if key not in self._grid_cache:
                c = self.config
                self._grid_cache[key] = window_grid(width, height, c.window_scales,
                                                    c.window_stride, c.include_full_frame)
            return self._grid_cache[key]

    def _call(self, pixels: np.ndarray, order: str, targets: Sequence[str],
              with_heatmap: bool, prepare: bool = False) -> Detection:
        with self._lock:
            config = self.config
        request = wire.request_json(order, targets, config, heatmap=with_heatmap,
                                    embed_boxes=self.embed_boxes, prepare=prepare)
        out = self.encoder._infer(protocol.detect_model(self.encoder.address.name),
                                  {protocol.FRAMES: pixels[None],
                                   protocol.REQUEST: np.array([[request]], dtype=object)},
                                  OUTPUTS)
        with self._lock:
            self.requests += 1
        return wire.decode_detection(out)

    def prepare(self, targets: Sequence[str]) -> None:
        """Have the server embed ``targets`` now (raises what a request raises), without
        making them current."""
        targets = tuple(targets)
        if targets:
            self._call(_PLACEHOLDER[0], "rgb", targets, False, prepare=True)

    def set_targets(self, targets: Sequence[str]) -> None:
        """Make ``targets`` current, embedded on the server first."""
        targets = tuple(targets)
        self.prepare(targets)
        with self._lock:
            self._targets = targets

    def detect(self, frame: Frame | np.ndarray, targets: Sequence[str] | None = None,
               with_heatmap: bool = False) -> Detection:
        """Find ``targets`` (default: the current ones) in ``frame``: one request."""
        with self._lock:
            targets = tuple(targets) if targets is not None else self._targets
        pixels, order = _wire_frame(frame)
        if not targets:
            height, width = pixels.shape[:2]
            return Detection([], self.windows_for(width, height), width, height)
        return self._call(pixels, order, targets, with_heatmap)

    def detect_batch(self, frames: Sequence[Frame | np.ndarray],
                     targets: Sequence[str] | None = None,
                     with_heatmap: bool = False) -> list[Detection]:
        """:meth:`detect` on several frames (a multi-camera node's batch): their requests
        go out at once, so the server can run them as one execution. Raises the first
        frame's error, if any (the caller retries the frames one by one)."""
        if len(frames) <= 1:
            return [self.detect(f, targets, with_heatmap) for f in frames]
        with ThreadPoolExecutor(len(frames), thread_name_prefix="triton-detect") as pool:
            jobs = [pool.submit(self.detect, f, targets, with_heatmap) for f in frames]
            return [job.result() for job in jobs]


def make_detector(encoder, config: DetectorConfig | None = None):
    """The detector for ``encoder``: a :class:`TritonDetector` for a ``triton://`` encoder
    whose server has a detect model (unless its URL says ``detect=local``), else the
    in-process :class:`~clip_perception.core.detect.detector.Detector`."""
    if (isinstance(encoder, TritonEncoder) and encoder.detect_model
            and encoder.address.detect == "server"):
        return TritonDetector(encoder, config)
    return Detector(encoder, config)
