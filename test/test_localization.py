"""Heatmaps, the max-sum box and coarse-to-fine window placement."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from clip_perception.core.detect.detector import SEARCH_RANK_POWER
from clip_perception.core.detect.localization import (
    best_box,
    heatmap,
    max_sum_rectangle,
    rank_fit_box,
    refine_windows,
)
from clip_perception.core.detect.windows import box_iou, window_grid


def test_heatmap_averages_over_covering_windows() -> None:
    # 40x16 frame, 8 px cells: 2 rows x 5 columns.
    boxes = np.array([[0, 0, 16, 16], [8, 0, 32, 16]])
    heat, coverage = heatmap(boxes, np.array([0.8, 0.2]), 40, 16, 8)
    assert heat.shape == coverage.shape == (2, 5)
    # column 0: first box only; column 1: both; columns 2-3: second only; column 4: none
    np.testing.assert_allclose(heat, [[0.8, 0.5, 0.2, 0.2, 0.0]] * 2)
    np.testing.assert_array_equal(coverage, [[1, 2, 1, 1, 0]] * 2)


def test_heatmap_shape_rounds_up() -> None:
    heat, coverage = heatmap(np.array([[0, 0, 30, 21]]), np.array([1.0]), 30, 21, 8)
    assert heat.shape == (3, 4)  # ceil(21/8), ceil(30/8)
    assert (coverage == 1).all() and np.allclose(heat, 1.0)


def test_heatmap_box_edges_snap_to_the_nearest_cell() -> None:
    # x 3..13 -> cells 0..1 (3/8 rounds to 0, 13/8 rounds to 2); y 5..11 -> cell 1
    heat, coverage = heatmap(np.array([[3, 5, 13, 11]]), np.array([0.6]), 32, 16, 8)
    expected = np.zeros((2, 4))
    expected[0:2, 0:2] = 0.6
    expected[0, :] = 0.0  # y 5 rounds to row 1
    np.testing.assert_allclose(heat, expected)
    np.testing.assert_array_equal(coverage > 0, expected > 0)


def test_tiny_box_still_covers_one_cell() -> None:
    heat, coverage = heatmap(np.array([[9, 9, 11, 11]]), np.array([0.9]), 32, 32, 8)
    assert coverage.sum() == 1 and heat.max() == pytest.approx(0.9)


def test_heatmap_of_no_windows() -> None:
    heat, coverage = heatmap(np.zeros((0, 4)), np.zeros(0), 16, 16, 8)
    assert heat.shape == (2, 2) and not heat.any() and not coverage.any()


def brute_force_max_rectangle(values: np.ndarray) -> float:
    rows, cols = values.shape
    return max(
        values[r0:r1, c0:c1].sum()
        for r0, r1 in itertools.combinations(range(rows + 1), 2)
        for c0, c1 in itertools.combinations(range(cols + 1), 2)
    )


def test_max_sum_rectangle_matches_brute_force() -> None:
    rng = np.random.default_rng(7)
    for trial in range(150):
        rows, cols = rng.integers(1, 7, size=2)
        values = rng.normal(-0.2, 1.0, size=(rows, cols))
        if trial % 10 == 0:
            values = -np.abs(values) - 0.1  # all negative
        (c0, r0, c1, r1), total = max_sum_rectangle(values)
        assert 0 <= c0 < c1 <= cols and 0 <= r0 < r1 <= rows
        assert total == pytest.approx(values[r0:r1, c0:c1].sum())
        assert total == pytest.approx(brute_force_max_rectangle(values))


def test_max_sum_rectangle_known_answer() -> None:
    values = -np.ones((5, 6))
    values[1:4, 2:5] = 2.0
    values[2, 3] = -1.0  # a dip inside is still worth keeping
    assert max_sum_rectangle(values) == ((2, 1, 5, 4), pytest.approx(8 * 2.0 - 1.0))
    single = -np.ones((3, 3))
    single[2, 0] = -0.5
    assert max_sum_rectangle(single) == ((0, 2, 1, 3), pytest.approx(-0.5))


def test_best_box_none_when_nothing_exceeds_alpha() -> None:
    heat = np.full((4, 4), 0.3)
    coverage = np.ones((4, 4))
    assert best_box(heat, coverage, 0.3, 8, 32, 32) is None
    assert best_box(heat, coverage, 0.5, 8, 32, 32) is None


def test_best_box_in_pixels_and_clipped_to_the_frame() -> None:
    heat = np.zeros((3, 4))  # a 30x20 frame in 8 px cells
    heat[1:3, 2:4] = 0.9
    box = best_box(heat, np.ones_like(heat), 0.5, 8, 30, 20)
    assert box == (16, 8, 30, 20)


def test_best_box_ignores_uncovered_cells() -> None:
    heat = np.zeros((4, 4))
    heat[1, 1] = heat[1, 2] = 0.9
    coverage = np.ones((4, 4))
    coverage[1, 2] = 0  # a stale value where no window looked
    assert best_box(heat, coverage, 0.5, 10, 40, 40) == (10, 10, 20, 20)


def covers(windows: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    mask = np.zeros((y1, x1), bool)
    for wx0, wy0, wx1, wy1 in windows:
        mask[max(wy0, y0):min(wy1, y1), max(wx0, x0):min(wx1, x1)] = True
    return bool(mask[y0:y1, x0:x1].all())


@pytest.mark.parametrize("box", [(100, 80, 196, 176), (0, 0, 60, 60), (580, 420, 640, 480),
                                 (200, 100, 440, 160), (300, 0, 330, 480)])
@pytest.mark.parametrize("budget", [1, 2, 4, 6, 9, 13, 27, 50, 200])
def test_refine_windows_respects_budget_and_covers_the_hit(box, budget) -> None:
    width, height = 640, 480
    windows = refine_windows(box, width, height, budget)
    assert 1 <= len(windows) <= budget
    assert (windows[:, :2] >= 0).all()
    assert (windows[:, 2] <= width).all() and (windows[:, 3] <= height).all()
    assert np.array_equal(windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1])
    aspect = max(box[2] - box[0], box[3] - box[1]) / min(box[2] - box[0], box[3] - box[1])
    if budget >= aspect + 1:  # enough square windows to span the box's long side
        assert covers(windows, box), f"{len(windows)} windows miss part of {box}"


def test_refine_windows_are_finer_than_the_hit() -> None:
    box = (100, 100, 196, 196)
    windows = refine_windows(box, 640, 480, 200)
    assert ((windows[:, 2] - windows[:, 0]) == 48).all()  # half the box side
    # the region is the box grown by half a window on each side
    assert windows[:, 0].min() == 76 and windows[:, 2].max() == 220
    assert len(windows) > len(refine_windows(box, 640, 480, 20))  # denser when affordable


def test_refine_windows_reach_at_least_min_pad_past_the_box() -> None:
    box = (100, 100, 132, 132)  # 16 px windows: half a window is 8 px
    windows = refine_windows(box, 640, 480, 200, min_pad=15)
    assert ((windows[:, 2] - windows[:, 0]) == 16).all()
    assert windows[:, 0].min() == 85 and windows[:, 2].max() == 147
    assert refine_windows(box, 640, 480, 200, min_pad=3)[:, 0].min() == 92  # half a window


def test_refine_windows_with_no_budget() -> None:
    assert refine_windows((0, 0, 50, 50), 100, 100, 0).shape == (0, 4)


def _shares(windows: np.ndarray, box) -> np.ndarray:
    ox = np.clip(np.minimum(windows[:, 2], box[2]) - np.maximum(windows[:, 0], box[0]), 0, None)
    oy = np.clip(np.minimum(windows[:, 3], box[3]) - np.maximum(windows[:, 1], box[1]), 0, None)
    return ox * oy / ((windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1]))


@pytest.mark.parametrize("curve", [np.sqrt, lambda s: s**2, lambda s: 1 - (1 - s) ** 8])
def test_rank_fit_recovers_a_small_object_whatever_the_response_curve(curve) -> None:
    """Two refine grids (60 and 32 px windows) around a 36x38 px object; the score is an
    increasing function of the share. Correlating the shares themselves with the score
    ranks (no polish) gives a box over twice the object's area."""
    truth = (212, 166, 248, 204)
    windows = np.concatenate([refine_windows((180, 120, 300, 240), 640, 480, 28),
                              refine_windows((200, 150, 265, 220), 640, 480, 28)])
    scores = curve(_shares(windows.astype(np.float64), truth))
    region = (150, 100, 320, 260)
    for polish, tight in ((True, True), (False, False)):
        box, _ = rank_fit_box(windows, scores, region, polish=polish)
        area = ((box[2] - box[0]) * (box[3] - box[1])
                / ((truth[2] - truth[0]) * (truth[3] - truth[1])))
        assert (box_iou(box, truth) >= 0.8 and area <= 1.3) is tight, (polish, box, area)


def _noisy_stage(rng: np.random.Generator, sigma: float):
    """A first refine stage (60 px windows every 30 px around a 120 px coarse hit, plus
    the coarse windows over it) and a 30-45 px object inside the hit; scores are the
    share plus noise of ``sigma``."""
    anchor = (240, 120, 360, 240)
    fine = refine_windows(anchor, 640, 480, 26)
    region = (int(fine[:, 0].min()), int(fine[:, 1].min()),
              int(fine[:, 2].max()), int(fine[:, 3].max()))
    coarse = window_grid(640, 480, (0.5, 0.25), 1.0, False)
    near = coarse[(coarse[:, 0] < region[2]) & (coarse[:, 2] > region[0])
                  & (coarse[:, 1] < region[3]) & (coarse[:, 3] > region[1])]
    windows = np.concatenate([fine, near]).astype(np.float64)
    w, h = rng.integers(30, 46, 2)
    x0, y0 = rng.integers(240, 360 - w), rng.integers(120, 240 - h)
    truth = (int(x0), int(y0), int(x0 + w), int(y0 + h))
    return windows, _shares(windows, truth) + rng.normal(0.0, sigma, len(windows)), region, truth


@pytest.mark.parametrize("sigma", [0.02, 0.04])
def test_powered_ranks_place_a_small_object_box_better_under_noise(sigma: float) -> None:
    """The order among the many windows that hold none of a small object is noise;
    fitting to ranks raised to the power the detector uses before its last stage
    weighs it less."""
    rng = np.random.default_rng(0)
    ious: dict[float, list[float]] = {1.0: [], SEARCH_RANK_POWER: []}
    for _ in range(60):
        windows, scores, region, truth = _noisy_stage(rng, sigma)
        for power, found in ious.items():
            found.append(box_iou(rank_fit_box(windows, scores, region, rank_power=power)[0],
                                 truth))
    mean = {p: float(np.mean(v)) for p, v in ious.items()}
    assert mean[SEARCH_RANK_POWER] >= mean[1.0] + 0.03, mean


@pytest.mark.parametrize("warp", [np.exp, lambda c: c**3, lambda c: 1 / (1 + np.exp(-20 * c))])
def test_rank_power_fit_depends_on_the_order_of_the_scores_only(warp) -> None:
    rng = np.random.default_rng(3)
    windows, scores, region, _ = _noisy_stage(rng, 0.04)
    box, _ = rank_fit_box(windows, scores, region, rank_power=SEARCH_RANK_POWER)
    assert rank_fit_box(windows, warp(scores), region, rank_power=SEARCH_RANK_POWER)[0] == box


def test_rank_power_one_is_the_plain_fit() -> None:
    rng = np.random.default_rng(4)
    windows, scores, region, _ = _noisy_stage(rng, 0.04)
    assert rank_fit_box(windows, scores, region, rank_power=1.0) == rank_fit_box(
        windows, scores, region)
