"""Sliding-window geometry."""

from __future__ import annotations

import numpy as np
import pytest

from clip_perception.core.detect.windows import box_iou, grid, positions, window_grid


def n_positions(length: int, size: int, step: int) -> int:
    """Windows along one axis: every ``step``, plus one flush with the far edge."""
    if size >= length:
        return 1
    span = length - size
    return span // step + 1 + (1 if span % step else 0)


def test_positions_end_flush_with_the_edge() -> None:
    assert positions(0, 100, 30, 15) == [0, 15, 30, 45, 60, 70]
    assert positions(0, 90, 30, 30) == [0, 30, 60]  # already flush: no extra window
    assert positions(5, 20, 30, 10) == [5]  # window larger than the span
    assert positions(10, 50, 20, 15) == [10, 25, 40]


def test_hand_computed_grid_100x60() -> None:
    # short side 60 -> side 30, step 15; x: 0..70 (70 = 100-30), y: 0..30 (30 = 60-30)
    xs, ys = [0, 15, 30, 45, 60, 70], [0, 15, 30]
    expected = [[0, 0, 100, 60]] + [[x, y, x + 30, y + 30] for y in ys for x in xs]
    boxes = window_grid(100, 60, scales=[0.5], stride=0.5)
    assert boxes.dtype == np.int64
    assert boxes.tolist() == expected


def test_full_frame_only_when_asked() -> None:
    with_full = window_grid(100, 60, [0.5], 0.5, include_full_frame=True)
    without = window_grid(100, 60, [0.5], 0.5, include_full_frame=False)
    assert with_full[0].tolist() == [0, 0, 100, 60]
    assert [0, 0, 100, 60] not in without.tolist()
    assert np.array_equal(with_full[1:], without)
    only_full = window_grid(100, 60, [], 0.5, include_full_frame=True)
    assert only_full.tolist() == [[0, 0, 100, 60]]
    assert window_grid(100, 60, [], 0.5, include_full_frame=False).shape == (0, 4)


@pytest.mark.parametrize("width, height", [(640, 480), (480, 640), (333, 199), (97, 97)])
@pytest.mark.parametrize("stride", [0.25, 0.5, 1.0])
def test_windows_square_inside_and_flush(width: int, height: int, stride: float) -> None:
    scales = (0.5, 0.25)
    boxes = window_grid(width, height, scales, stride, include_full_frame=False)
    x0, y0, x1, y1 = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x1 <= width).all() and (y1 <= height).all()
    assert np.array_equal(x1 - x0, y1 - y0)  # square
    short = min(width, height)
    for scale in scales:
        side = round(scale * short)
        mine = boxes[(x1 - x0) == side]
        assert len(mine) == (n_positions(width, side, max(1, round(side * stride)))
                             * n_positions(height, side, max(1, round(side * stride))))
        assert mine[:, 2].max() == width and mine[:, 3].max() == height  # last ends at the edge
        assert mine[:, 0].min() == 0 and mine[:, 1].min() == 0
        covered = np.zeros((height, width), bool)
        for bx0, by0, bx1, by1 in mine:
            covered[by0:by1, bx0:bx1] = True
        assert covered.all(), "every pixel lies in some window of each scale"


def test_default_single_pass_grid_is_86_at_640x480() -> None:
    width, height, short = 640, 480, 480
    expected = 1  # whole frame
    for scale in (0.5, 0.25):
        side = round(scale * short)
        step = round(side * 0.5)
        expected += n_positions(width, side, step) * n_positions(height, side, step)
    assert expected == 86
    assert len(window_grid(640, 480, (0.5, 0.25), 0.5)) == expected


def test_grid_over_a_region_stays_in_it() -> None:
    region = (10, 20, 70, 50)  # 60 x 30
    boxes = grid(region, 20, 0.5)
    assert boxes[:, 0].min() == 10 and boxes[:, 1].min() == 20
    assert boxes[:, 2].max() == 70 and boxes[:, 3].max() == 50
    assert sorted(set(boxes[:, 0].tolist())) == [10, 20, 30, 40, 50]
    assert sorted(set(boxes[:, 1].tolist())) == [20, 30]
    # a window larger than the region shrinks to the region's short side
    big = grid(region, 100, 0.5)
    assert ((big[:, 2] - big[:, 0]) == 30).all()
    assert big[:, 2].max() == 70


@pytest.mark.parametrize("width, height", [(0, 10), (10, 0), (-1, 5)])
def test_empty_frame_is_rejected(width: int, height: int) -> None:
    with pytest.raises(ValueError):
        window_grid(width, height, [0.5], 0.5)


def test_box_iou() -> None:
    a = (0, 0, 10, 10)
    assert box_iou(a, a) == 1.0
    assert box_iou(a, (20, 20, 30, 30)) == 0.0
    assert box_iou(a, (10, 0, 20, 10)) == 0.0  # touching edges share no pixel
    assert box_iou(a, (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou(a, (0, 0, 5, 5)) == pytest.approx(25 / 100)  # contained
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    b = (3, 4, 17, 9)
    assert box_iou(a, b) == pytest.approx(box_iou(b, a))
    assert box_iou(np.array(a), np.array((5, 0, 15, 10))) == pytest.approx(1 / 3)
