"""Raw image buffers to zero-copy frames, and frames to device tensors."""

from __future__ import annotations

import array

import numpy as np
import pytest
import torch

from clip_perception.core.detect.crops import FrameUploader
from clip_perception.core.io.image_formats import Frame, ImageFormatError, frame_from_buffer

H, W = 5, 7
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def rgb_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """The (H, W, C) pixels as the encoding lays them out in memory."""
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return rgb[:, :, ::-1]
    alpha = np.full(rgb.shape[:2] + (1,), 77, np.uint8)
    if encoding == "rgba8":
        return np.concatenate([rgb, alpha], axis=2)
    if encoding == "bgra8":
        return np.concatenate([rgb[:, :, ::-1], alpha], axis=2)
    if encoding == "mono8":
        return rgb[:, :, :1]
    raise AssertionError(encoding)


def buffer_of(pixels: np.ndarray, padding: int) -> tuple[np.ndarray, int]:
    """A flat uint8 buffer with ``padding`` junk bytes after each row, and its step."""
    h, w, c = pixels.shape
    step = w * c + padding
    rows = np.full((h, step), 0xEE, np.uint8)  # padding bytes are junk
    rows[:, : w * c] = pixels.reshape(h, w * c)
    return rows.reshape(-1), step


def expected_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    return np.repeat(rgb[:, :, :1], 3, axis=2) if encoding == "mono8" else rgb


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("encoding", list(CHANNELS))
def test_frame_is_a_view_with_the_right_pixels(encoding: str, padding: int) -> None:
    rgb = rgb_image()
    pixels = encode(rgb, encoding)
    data, step = buffer_of(pixels, padding)
    frame = frame_from_buffer(encoding, H, W, step, data)
    assert (frame.height, frame.width) == (H, W)
    assert frame.pixels.shape == (H, W, CHANNELS[encoding])
    assert np.array_equal(frame.pixels, pixels)
    assert np.shares_memory(frame.pixels, data), "the frame must view the buffer, not copy it"
    assert not frame.pixels.flags.writeable
    rgb_out = frame.to_rgb()
    assert rgb_out.shape == (H, W, 3) and rgb_out.dtype == np.uint8
    assert rgb_out.flags.c_contiguous
    assert np.array_equal(rgb_out, expected_rgb(rgb, encoding))


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "array"])
def test_other_buffer_types(kind: str) -> None:
    rgb = rgb_image(1)
    flat, step = buffer_of(rgb, 2)
    data = {"bytes": bytes(flat), "bytearray": bytearray(flat.tobytes()),
            "array": array.array("B", flat.tobytes())}[kind]
    frame = frame_from_buffer("rgb8", H, W, step, data)
    assert np.array_equal(frame.to_rgb(), rgb)
    if kind != "bytes":
        assert np.shares_memory(frame.pixels, np.frombuffer(data, np.uint8))


def test_frame_tracks_the_buffer() -> None:
    """A view: later writes to the source show through (proves there is no copy)."""
    data = bytearray(H * W * 3)
    frame = frame_from_buffer("rgb8", H, W, W * 3, data)
    data[(2 * W + 3) * 3 + 1] = 200  # row 2, column 3, green
    assert frame.pixels[2, 3, 1] == 200


def test_data_may_omit_the_last_rows_padding() -> None:
    rgb = rgb_image(2)
    flat, step = buffer_of(rgb, 4)
    frame = frame_from_buffer("rgb8", H, W, step, flat[:-4])
    assert np.array_equal(frame.to_rgb(), rgb)


@pytest.mark.parametrize("encoding", ["16UC1", "yuv422", "bayer_rggb8", "RGB8", ""])
def test_unknown_encoding(encoding: str) -> None:
    with pytest.raises(ImageFormatError, match="unsupported encoding") as info:
        frame_from_buffer(encoding, H, W, W * 3, bytes(H * W * 3))
    assert "rgb8" in str(info.value) and "mono8" in str(info.value)  # lists what works


@pytest.mark.parametrize(
    "height, width, step, size, message",
    [
        (H, W, W * 3 - 1, H * W * 3, "step"),  # step shorter than a row
        (H, W, W * 3, H * W * 3 - 1, "data holds"),  # too short
        (H, W, W * 3, H * W * 3 + 1, "more than"),  # too long
        (0, W, W * 3, 0, "empty"),
        (H, 0, 0, 0, "empty"),
        (-2, W, W * 3, 0, "empty"),
    ],
)
def test_inconsistent_sizes(height: int, width: int, step: int, size: int, message: str) -> None:
    with pytest.raises(ImageFormatError, match=message):
        frame_from_buffer("rgb8", height, width, step, bytes(size))


def test_error_messages_name_the_numbers() -> None:
    with pytest.raises(ImageFormatError) as info:
        frame_from_buffer("rgb8", H, W, 20, bytes(1000))
    assert "20" in str(info.value) and str(W * 3) in str(info.value)
    with pytest.raises(ImageFormatError) as info:
        frame_from_buffer("mono8", H, W, W, bytes(10))
    assert "10" in str(info.value) and str(H * W) in str(info.value)


def test_image_format_error_is_a_value_error() -> None:
    assert issubclass(ImageFormatError, ValueError)


def test_from_rgb_checks_shape_and_dtype() -> None:
    rgb = rgb_image()
    frame = Frame.from_rgb(rgb)
    assert frame.order == "rgb" and frame.pixels is rgb
    for bad in (rgb.astype(np.float32), rgb[:, :, :2], rgb[:, :, 0]):
        with pytest.raises(ImageFormatError):
            Frame.from_rgb(bad)


@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize("encoding", list(CHANNELS))
def test_uploader_gives_rgb_float_in_unit_range(encoding: str, padding: int) -> None:
    rgb = rgb_image(3)
    data, step = buffer_of(encode(rgb, encoding), padding)
    frame = frame_from_buffer(encoding, H, W, step, data)
    tensor = FrameUploader(torch.device("cpu"))(frame)
    assert tensor.shape == (1, 3, H, W) and tensor.dtype == torch.float32
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    want = torch.from_numpy(expected_rgb(rgb, encoding).astype(np.float32) / 255.0)
    assert torch.allclose(tensor[0].permute(1, 2, 0), want, atol=1e-6)


def test_uploader_does_not_write_to_the_buffer() -> None:
    rgb = rgb_image(4)
    data, step = buffer_of(encode(rgb, "bgr8"), 1)
    before = data.copy()
    FrameUploader(torch.device("cpu"))(frame_from_buffer("bgr8", H, W, step, data))
    assert np.array_equal(data, before)
