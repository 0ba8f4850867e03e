"""Cutting windows out of an uploaded frame with roi_align (aligned=True)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clip_perception.core.detect.crops import FrameUploader, boxes_tensor, crop_windows
from clip_perception.core.io.image_formats import Frame

QUADRANTS = {  # (x0, y0, x1, y1) of a 64x64 frame -> RGB colour
    (0, 0, 32, 32): (255, 0, 0),
    (32, 0, 64, 32): (0, 255, 0),
    (0, 32, 32, 64): (0, 0, 255),
    (32, 32, 64, 64): (255, 255, 0),
}


def upload(rgb: np.ndarray) -> torch.Tensor:
    return FrameUploader(torch.device("cpu"))(Frame.from_rgb(rgb))


@pytest.fixture(scope="module")
def quadrant_image() -> torch.Tensor:
    rgb = np.zeros((64, 64, 3), np.uint8)
    for (x0, y0, x1, y1), colour in QUADRANTS.items():
        rgb[y0:y1, x0:x1] = colour
    return upload(rgb)


@pytest.mark.parametrize("size", [8, 16, 32])
def test_each_quadrant_crop_is_its_colour(quadrant_image: torch.Tensor, size: int) -> None:
    boxes = np.array(list(QUADRANTS), dtype=np.int64)
    crops = crop_windows(quadrant_image, boxes, size)
    assert crops.shape == (len(boxes), 3, size, size)
    assert crops.dtype == torch.float32
    for crop, colour in zip(crops, QUADRANTS.values()):
        want = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1) / 255.0
        assert torch.allclose(crop, want.expand_as(crop), atol=1e-6)


def test_non_integer_resize_stays_mostly_inside(quadrant_image: torch.Tensor) -> None:
    """Side 32 -> 24: edge samples may blend a little of the neighbour, the interior not."""
    boxes = np.array(list(QUADRANTS), dtype=np.int64)
    crops = crop_windows(quadrant_image, boxes, 24)
    for crop, colour in zip(crops, QUADRANTS.values()):
        want = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1) / 255.0
        assert torch.allclose(crop[:, 2:-2, 2:-2], want.expand(3, 20, 20), atol=1e-6)
        assert (crop - want).abs().max() < 0.25


def test_whole_frame_box(quadrant_image: torch.Tensor) -> None:
    same = crop_windows(quadrant_image, np.array([[0, 0, 64, 64]]), 64)
    assert torch.allclose(same[0], quadrant_image[0], atol=1e-6)
    # half size: every output pixel is the mean of a 2x2 block (anti-aliased, not subsampled)
    half = crop_windows(quadrant_image, np.array([[0, 0, 64, 64]]), 32)
    assert torch.allclose(half, F.avg_pool2d(quadrant_image, 2), atol=1e-6)


def test_downscaling_averages_rather_than_skips() -> None:
    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes that a 2x subsampler would miss or double
    crop = crop_windows(upload(stripes), np.array([[0, 0, 32, 32]]), 16)
    assert torch.allclose(crop, torch.full_like(crop, 0.5), atol=1e-6)


@pytest.mark.parametrize("line_x, box", [(20, (8, 4, 40, 36)), (9, (9, 0, 41, 32)),
                                         (47, (16, 16, 48, 48))])
def test_pixel_coordinates_are_exact_at_one_to_one(line_x: int, box: tuple) -> None:
    """Box side == output size: crop column ``line_x - x0`` is exactly the line."""
    rgb = np.zeros((48, 48, 3), np.uint8)
    rgb[:, line_x] = 255
    rgb[30, :, 1] = 128  # a horizontal line in the green channel only
    x0, y0, x1, y1 = box
    crop = crop_windows(upload(rgb), np.array([box]), x1 - x0)[0]
    red = crop[0]
    col = line_x - x0
    assert torch.allclose(red[:, col], torch.ones(y1 - y0))
    others = torch.cat([red[:, :col], red[:, col + 1:]], dim=1)
    assert torch.count_nonzero(others) == 0
    green = crop[1]
    if y0 <= 30 < y1:
        row = 30 - y0
        assert torch.allclose(green[row, :col], torch.full((col,), 128 / 255))
        assert torch.count_nonzero(torch.cat([green[:row, :col], green[row + 1:, :col]])) == 0


def test_boxes_as_rois_tensor(quadrant_image: torch.Tensor) -> None:
    boxes = np.array([[32, 32, 64, 64], [0, 0, 32, 32]])
    rois = boxes_tensor(boxes, torch.device("cpu"))
    assert rois.shape == (2, 5)
    assert torch.equal(rois[:, 0], torch.zeros(2))
    assert torch.equal(rois[:, 1:], torch.tensor(boxes, dtype=torch.float32))
    assert torch.allclose(crop_windows(quadrant_image, rois, 16),
                          crop_windows(quadrant_image, boxes, 16))


def test_order_of_boxes_is_kept(quadrant_image: torch.Tensor) -> None:
    boxes = np.array(list(QUADRANTS)[::-1])
    crops = crop_windows(quadrant_image, boxes, 4)
    means = crops.mean(dim=(2, 3))
    for mean, colour in zip(means, list(QUADRANTS.values())[::-1]):
        assert torch.allclose(mean, torch.tensor(colour, dtype=torch.float32) / 255.0)


def test_the_compiled_op_and_torchvision_ops_cut_the_same_crops(monkeypatch) -> None:
    """The op loaded without torchvision's package is torchvision.ops.roi_align; where
    it cannot be loaded, torchvision.ops is used, with the same crops."""
    from torchvision.ops import roi_align

    from clip_perception.core.detect import crops

    rng = np.random.default_rng(3)
    image = torch.from_numpy(rng.random((1, 3, 97, 131), dtype=np.float32))
    x0, y0 = rng.uniform(0, 60, 20), rng.uniform(0, 40, 20)
    boxes = np.stack([x0, y0, x0 + rng.uniform(2, 70, 20), y0 + rng.uniform(2, 56, 20)], 1)
    expected = roi_align(image, crops.boxes_tensor(boxes, image.device), (24, 24), 1.0, -1, True)
    assert torch.equal(crops.crop_windows(image, boxes, 24), expected)
    monkeypatch.setattr(crops.importlib.util, "find_spec", lambda name: None)
    crops.roi_align_op.cache_clear()
    try:
        assert torch.equal(crops.crop_windows(image, boxes, 24), expected)
    finally:
        crops.roi_align_op.cache_clear()  # the next call loads the compiled op again


def test_detecting_does_not_import_torchvisions_python_package() -> None:
    """torchvision's package imports torch._dynamo: about 1.5 s more start-up per node."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from clip_perception.core.detect.detector import Detector\n"
            "from clip_perception.testing.color_encoder import factory\n"
            "Detector(factory()).detect(np.zeros((48, 64, 3), np.uint8), ['red block'])\n"
            "print(sorted(m for m in sys.modules\n"
            "             if m.startswith(('torchvision', 'torch._dynamo'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
