"""A remote encoder, ``model:=triton://host:port/name``, served by ``clip_perception.serve``.

Talks gRPC to Triton Inference Server through ``tritonclient`` (optional:
``pip install 'tritonclient[grpc]'``). Frames go out as uint8 with their window
boxes (:meth:`TritonEncoder.encode_windows`); the server crops on its device.
Each frame is sent once: the detector's later passes over the same pixels send
only the frame's id and their boxes, and if the server no longer holds the frame
(restarted, or evicted by other clients' frames) it is sent again, transparently
(see :mod:`.triton_protocol`).

Failures are per call. While the server is down or slow, each call raises
:class:`~clip_perception.core.encoder.EncoderUnavailableError` after at most
``timeout`` seconds, and the next call opens a fresh connection, so the encoder
recovers by itself as soon as the server answers again. A call the server
answers with an error (the model raised, a shape it refused: gRPC status
INTERNAL, INVALID_ARGUMENT and the like) raises
:class:`~clip_perception.core.encoder.EncoderRequestError` with the server's
message and keeps the connection.

URL: ``triton://HOST[:PORT]/NAME[?timeout=S&connect_timeout=S&detect=W]``; PORT
defaults to Triton's gRPC port 8001, ``timeout`` (per call, default 30 s),
``connect_timeout`` (how long loading waits for the server, default 10 s) and
``detect``: ``server`` (default) runs the whole detector on the server, one request
per frame (:mod:`.triton_detector`); ``local`` runs it here over this encoder, one
request per detector pass.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import numpy as np
import torch

from ..encoder import (
    EncoderRequestError,
    EncoderUnavailableError,
    ModelLoadError,
    ModelUnreachableError,
)
from ..io.image_formats import Frame
from . import triton_protocol as protocol

SCHEME = "triton://"
DEFAULT_PORT = 8001
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
INSTALL_HINT = "pip install 'tritonclient[grpc]'"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
DETECT_WHERE = ("server", "local")  # the detector on the server (one request per frame), or here
RECENT_FRAMES = 4  # frames the client remembers having sent (one per camera in flight)
_PLACEHOLDER = np.zeros((1, 1, 1, 3), np.uint8)  # ``frames`` of a request that names its frame
# gRPC statuses of a call the server answered and failed; any other failure is an outage
REQUEST_ERROR_CODES = frozenset({"INTERNAL", "INVALID_ARGUMENT", "OUT_OF_RANGE",
                                 "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "UNIMPLEMENTED",
                                 "ALREADY_EXISTS", "ABORTED"})


def grpc_status(exc: BaseException) -> str | None:
    """The gRPC status name of a tritonclient error (``INTERNAL``...), or None."""
    status = getattr(exc, "status", None)
    status = status() if callable(status) else status
    return str(status).rsplit(".", 1)[-1] if status else None


def server_message(exc: BaseException) -> str:
    """What the server (or gRPC) said, else the exception's name."""
    message = getattr(exc, "message", None)
    message = message() if callable(message) else message
    return message or str(exc) or type(exc).__name__


@dataclass(frozen=True)
class TritonAddress:
    """A parsed ``triton://`` URL."""

    host: str
    port: int
    name: str
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    detect: str = "server"  # server: one detect request per frame; local: one per pass

    @property
    def grpc_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{SCHEME}{self.grpc_url}/{self.name}"


def parse_triton_url(url: str) -> TritonAddress:
    """``triton://host[:port]/name[?timeout=S&connect_timeout=S]`` -> :class:`TritonAddress`.

    Raises:
        ModelLoadError: naming what is wrong with the URL.
    """
    usage = "use triton://HOST:PORT/NAME, e.g. triton://127.0.0.1:8001/clip"
    if not url.startswith(SCHEME):
        raise ModelLoadError(f"'{url}' is not a triton:// URL; {usage}")
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ModelLoadError(f"bad port in '{url}': {exc}; {usage}") from exc
    name = parts.path.strip("/")
    if not parts.hostname or not _NAME.match(name):
        raise ModelLoadError(f"'{url}' needs a host and a model name; {usage}")
    values = {}
    for key, items in parse_qs(parts.query, keep_blank_values=True).items():
        if key == "detect":
            if items[-1] not in DETECT_WHERE:
                raise ModelLoadError(f"option detect={items[-1]!r} in '{url}' is not one of "
                                     f"{', '.join(DETECT_WHERE)}")
            values[key] = items[-1]
            continue
        if key not in ("timeout", "connect_timeout"):
            raise ModelLoadError(f"unknown option '{key}' in '{url}'; known: timeout, "
                                 "connect_timeout (seconds), detect (server or local)")
        try:
            values[key] = float(items[-1])
        except ValueError as exc:
            raise ModelLoadError(f"option {key}={items[-1]!r} in '{url}' is not a number") from exc
        if values[key] <= 0:
            raise ModelLoadError(f"option {key} in '{url}' must be > 0 seconds")
    return TritonAddress(parts.hostname, port, name, **values)


def _grpc_module():
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as exc:
        raise ModelLoadError(
            f"a triton:// model needs the Triton client, which is not importable ({exc}); "
            f"install it with `{INSTALL_HINT}`") from exc
    return grpcclient


class TritonEncoder:
    """The :class:`~clip_perception.core.encoder.Encoder` API over a Triton server.

    Thread-safe. ``device`` is the CPU: embeddings come back as CPU tensors.
    """

    def __init__(self, address: TritonAddress, grpcclient=None):
        self.address = address
        self.device = torch.device("cpu")
        self._grpc = grpcclient or _grpc_module()
        self._lock = threading.Lock()
        self._client = None
        self.failures = 0  # calls that raised EncoderUnavailableError
        self.request_errors = 0  # calls that raised EncoderRequestError
        # image calls: total client round trips, and the server's model time within them
        self.call_seconds = 0.0
        self.server_seconds = 0.0
        self.input_size = 224
        self.logit_scale = 100.0
        self.max_batch = 1
        self.detect_model = False  # the server has NAME_detect (set by _describe)
        # the frames this client sent lately, by content: (pixels, order, frame id), newest last
        self.client_id = secrets.randbits(64)
        self._recent: list[tuple[np.ndarray, str, int]] = []
        self.frames_sent = 0  # image requests that carried a frame
        self.frames_resent = 0  # ... of them because the server no longer held it
        self.id_requests = 0  # image requests that named a frame by its id only
        self._describe()

    # --- connection -------------------------------------------------------------
    def _get_client(self):
        with self._lock:
            if self._client is None:
                self._client = self._grpc.InferenceServerClient(self.address.grpc_url)
            return self._client

    def _drop_client(self, client) -> None:
        """Forget a connection that failed, so the next call opens a fresh one
        (a fresh gRPC channel connects at once instead of after its reconnect backoff)."""
        with self._lock:
            if self._client is client:
                self._client = None
        try:
            client.close()
        except Exception:  # noqa: BLE001 - a broken channel may fail to close; it is dropped anyway
            pass

    def _infer(self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str],
               timeout: float | None = None) -> dict[str, np.ndarray]:
        grpc = self._grpc
        client = self._get_client()
        tensors = []
        for name, array in inputs.items():
            dtype = "BYTES" if array.dtype == object else grpc.np_to_triton_dtype(array.dtype)
            tensor = grpc.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        start = time.perf_counter()
        try:
            result = client.infer(model, tensors,
                                  outputs=[grpc.InferRequestedOutput(n) for n in outputs],
                                  client_timeout=timeout or self.address.timeout)
        except Exception as exc:  # InferenceServerException and anything grpc raises
            if grpc_status(exc) in REQUEST_ERROR_CODES:  # answered: the connection is fine
                with self._lock:
                    self.request_errors += 1
                raise EncoderRequestError(f"Triton server {self.address} failed the request "
                                          f"({model}): {server_message(exc)}") from exc
            with self._lock:
                self.failures += 1
            self._drop_client(client)
            raise EncoderUnavailableError(
                f"Triton server {self.address} did not answer ({model}): "
                f"{server_message(exc)}") from exc
        out = {n: result.as_numpy(n) for n in outputs}
        if protocol.SECONDS in out:
            self.call_seconds += time.perf_counter() - start
            self.server_seconds += float(out[protocol.SECONDS].reshape(-1)[0])
        return out

    def _describe(self) -> None:
        """Ask the server for the encoder's embedding size, logit scale and input size,
        waiting up to ``connect_timeout`` for it to come up."""
        deadline = time.monotonic() + self.address.connect_timeout
        while True:
            try:
                out = self._infer(protocol.text_model(self.address.name),
                                  {protocol.TEXTS: np.array([b"a photo"], dtype=object)},
                                  (protocol.EMBEDDINGS, protocol.LOGIT_SCALE,
                                   protocol.INPUT_SIZE),
                                  timeout=self.address.connect_timeout)
                config = self._get_client().get_model_config(
                    protocol.image_model(self.address.name), client_timeout=5.0).config
                break
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise ModelUnreachableError(
                        f"no encoder at {self.address} ({exc}); start one with `python -m "
                        f"clip_perception.serve --model MODEL --name {self.address.name} "
                        f"--grpc-port {self.address.port}` or check the host and port") from exc
                time.sleep(0.5)
        self.dim = int(out[protocol.EMBEDDINGS].shape[-1])
        self.logit_scale = float(out[protocol.LOGIT_SCALE].reshape(-1)[0])
        self.input_size = int(out[protocol.INPUT_SIZE].reshape(-1)[0])
        self.max_batch = max(1, int(config.max_batch_size))
        try:  # a server of an older version has no detect model: the passes serve
            self._get_client().get_model_config(protocol.detect_model(self.address.name),
                                                client_timeout=5.0)
            self.detect_model = True
        except Exception:  # noqa: BLE001 - any answer but a config means no such model
            self.detect_model = False
        if protocol.FRAME_IDS not in {i.name for i in config.input}:
            raise ModelLoadError(
                f"the encoder at {self.address} speaks an older protocol (no "
                f"'{protocol.FRAME_IDS}' input): update clip_perception on the server")
        self.failures = self.request_errors = 0

    # --- the encoder API ----------------------------------------------------------
    def _known_frame(self, pixels: np.ndarray, order: str) -> int | None:
        """The id of a frame with these pixels (as they arrived: ``order``, before any
        conversion to RGB) that this client sent lately, or None."""
        with self._lock:
            for seen, seen_order, frame_id in reversed(self._recent):
                if (seen_order == order and seen.shape == pixels.shape
                        and np.array_equal(seen, pixels)):
                    return frame_id
        return None

    def _remember(self, pixels: np.ndarray, order: str, frame_id: int) -> None:
        copy = np.array(pixels, copy=True)  # the caller may reuse its buffer for the next frame
        with self._lock:
            self._recent = [e for e in self._recent if e[2] != frame_id][-(RECENT_FRAMES - 1):]
            self._recent.append((copy, order, frame_id))

    def _image_request(self, pixels: np.ndarray | None, frame_id: int,
                       boxes: np.ndarray) -> dict[str, np.ndarray]:
        frames = _PLACEHOLDER if pixels is None else pixels[None]
        ids = np.array([[self.client_id, frame_id, pixels is not None]], np.uint64)
        out = self._infer(protocol.image_model(self.address.name),
                          {protocol.FRAMES: frames, protocol.FRAME_IDS: ids,
                           protocol.BOXES: boxes[None]},
                          (protocol.EMBEDDINGS, protocol.STATUS, protocol.SECONDS))
        with self._lock:
            if pixels is None:
                self.id_requests += 1
            else:
                self.frames_sent += 1
        return out

    def encode_windows(self, frame: Frame | np.ndarray, boxes: np.ndarray) -> torch.Tensor:
        """Embed ``boxes`` ``[K, 4]`` of ``frame`` (a :class:`Frame` or uint8 RGB ``[H, W, 3]``),
        cropped on the server: ``[K, D]`` float32 on the CPU.

        A frame with the pixels of one sent lately is named by its id only; if the
        server answers that it no longer holds it, it is sent again."""
        raw, order = (frame.pixels, frame.order) if isinstance(frame, Frame) else (frame, "rgb")
        boxes = np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 4)
        frame_id = self._known_frame(raw, order)  # before converting: a named frame needs none
        if frame_id is not None:
            out = self._image_request(None, frame_id, boxes)
            if int(out[protocol.STATUS].reshape(-1)[0]) == protocol.OK:
                return torch.from_numpy(np.array(out[protocol.EMBEDDINGS][0], dtype=np.float32))
            with self._lock:
                self.frames_resent += 1
        else:
            frame_id = secrets.randbits(64) or 1  # 0 is UNCACHED
        pixels = frame.to_rgb() if isinstance(frame, Frame) else frame
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        out = self._image_request(pixels, frame_id, boxes)
        status = int(out[protocol.STATUS].reshape(-1)[0])
        if status != protocol.OK:
            raise EncoderRequestError(
                f"Triton server {self.address} answered status {status} for a frame it was sent")
        self._remember(raw, order, frame_id)
        return torch.from_numpy(np.array(out[protocol.EMBEDDINGS][0], dtype=np.float32))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` RGB in [0, 1] -> ``[N, D]``: each image is sent as an 8-bit frame
        with one box covering it (exact up to 8-bit rounding), ``max_batch`` per request."""
        pixels = (images.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        pixels = pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        n, h, w = pixels.shape[:3]
        box = np.array([[[0.0, 0.0, w, h]]], dtype=np.float32)
        parts = []
        for start in range(0, n, self.max_batch):
            chunk = pixels[start:start + self.max_batch]
            ids = np.array([[self.client_id, protocol.UNCACHED, 1]] * len(chunk), np.uint64)
            out = self._infer(protocol.image_model(self.address.name),
                              {protocol.FRAMES: chunk, protocol.FRAME_IDS: ids,
                               protocol.BOXES: np.repeat(box, len(chunk), axis=0)},
                              (protocol.EMBEDDINGS, protocol.STATUS, protocol.SECONDS))
            parts.append(np.array(out[protocol.EMBEDDINGS][:, 0], dtype=np.float32))
        if not parts:
            return torch.zeros((0, getattr(self, "dim", 0)))
        return torch.from_numpy(np.concatenate(parts))

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Strings -> ``[M, D]`` float32 on the CPU."""
        data = np.array([t.encode("utf-8") for t in texts], dtype=object)
        out = self._infer(protocol.text_model(self.address.name), {protocol.TEXTS: data},
                          (protocol.EMBEDDINGS,))
        return torch.from_numpy(np.array(out[protocol.EMBEDDINGS], dtype=np.float32))


def load_triton_encoder(url: str) -> TritonEncoder:
    """Connect to the encoder served at ``url`` (see the module doc).

    Raises:
        ModelLoadError: bad URL, tritonclient missing, or no such server/model in time.
    """
    address = parse_triton_url(url)
    return TritonEncoder(address, _grpc_module())
