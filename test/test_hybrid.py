"""Hybrid mode with known-answer dense encoders: proposals, verification, budget, heatmap,
the run-time switch, and the fallback for encoders without encode_dense."""

from __future__ import annotations

import functools
import logging
import os

import numpy as np
import pytest
import torch
from family import members

from clip_perception.core.detect.config import ConfigError, DetectorConfig
from clip_perception.core.detect.dense_regions import fit_cells, margin_map, regions, scaled_boxes
from clip_perception.core.detect.detector import Detector
from clip_perception.core.detect.hybrid import (
    cell_bounds,
    dense_heatmap,
    needs_zoom,
    outside_median,
    supports_dense,
    zoom_region,
)
from clip_perception.core.detect.windows import box_iou
from clip_perception.testing import known_answer
from clip_perception.testing.color_encoder import ColorEncoder
from clip_perception.testing.scenes import hard_scene_set, make_scene, paint

HYBRID = DetectorConfig(mode="hybrid")
MEMBERS = known_answer.family()


@functools.lru_cache(maxsize=1)
def hard_targets() -> tuple:
    """12 hard evaluation scenes that hold the target (made once per session)."""
    return tuple(s for s in hard_scene_set(16, seed=7) if s.target_boxes)[:12]


def inside(box, truth) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return truth[0] <= cx < truth[2] and truth[1] <= cy < truth[3]


class CropsOnly:
    """An encoder with the crop contract only (no encode_dense)."""

    def __init__(self):
        self._inner = ColorEncoder()
        self.input_size = self._inner.input_size
        self.logit_scale = self._inner.logit_scale
        self.encode_images = self._inner.encode_images
        self.encode_texts = self._inner.encode_texts


def test_config_validates_mode_and_verify_crops() -> None:
    assert DetectorConfig().mode == "crops"
    with pytest.raises(ConfigError, match="mode"):
        DetectorConfig(mode="dense")
    for bad in (0, 257):
        with pytest.raises(ConfigError, match="verify_crops"):
            DetectorConfig(verify_crops=bad)


@pytest.mark.slow
@pytest.mark.parametrize("member", members())
def test_every_member_finds_the_target_within_the_budget(member: str) -> None:
    encoder = known_answer.load(member)
    assert supports_dense(encoder)
    detector = Detector(encoder, HYBRID)
    rng = np.random.default_rng(11)
    misses = []
    for k in range(6):
        scene = make_scene(rng, target_colour=("red", "blue", "green")[k % 3],
                           size_range=(40, 160), distractors=k % 4)
        result = detector.detect(scene.image, [scene.target])
        found = result.targets[0]
        assert found.present, (member, k, found.score)
        if not inside(found.box, scene.target_box):
            misses.append((k, found.box, scene.target_box))
        assert result.crops <= HYBRID.verify_crops
    # Pointing is a rate: on saturating members the current box method can spread a thin
    # object's box past it (as in crop mode; issue 7), so one miss in six is allowed.
    assert len(misses) <= 1, (member, misses)
    for k in range(3):
        scene = make_scene(rng, target_colour="yellow", present=False, distractors=2)
        assert not detector.detect(scene.image, [scene.target]).targets[0].present, (member, k)


@pytest.mark.slow
def test_hybrid_box_fits_a_block_on_the_linear_member() -> None:
    detector = Detector(known_answer.load("linear"), HYBRID)
    rng = np.random.default_rng(5)
    ious = []
    for _ in range(8):
        scene = make_scene(rng, size_range=(60, 140), distractors=2)
        ious.append(box_iou(detector.detect(scene.image, [scene.target]).targets[0].box,
                            scene.target_box))
    assert np.mean(np.asarray(ious) >= 0.5) >= 0.75, ious


@pytest.mark.slow
def test_two_targets_are_each_found_and_share_the_budget() -> None:
    detector = Detector(known_answer.load("linear"), HYBRID)
    image = np.full((480, 640, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    paint(image, (60, 80, 160, 180), "red", rng)
    paint(image, (420, 260, 540, 380), "blue", rng)
    result = detector.detect(image, ["red block", "blue block"])
    red, blue = result.targets
    assert red.present and blue.present
    assert inside(red.box, (60, 80, 160, 180)) and inside(blue.box, (420, 260, 540, 380))
    assert result.crops <= HYBRID.verify_crops


@pytest.mark.slow
def test_hybrid_costs_far_fewer_crops_than_crop_mode() -> None:
    encoder = known_answer.load("linear")
    scene = make_scene(np.random.default_rng(2), distractors=1)
    crops = Detector(encoder).detect(scene.image, [scene.target]).crops
    hybrid = Detector(encoder, HYBRID).detect(scene.image, [scene.target]).crops
    assert hybrid <= 12 < crops


@pytest.mark.slow
def test_heatmap_comes_from_the_dense_map() -> None:
    encoder = ColorEncoder()
    detector = Detector(encoder, HYBRID)
    image = np.full((480, 640, 3), 128, np.uint8)
    paint(image, (96, 64, 224, 192), "red", np.random.default_rng(0))  # on 16 px cell edges
    result = detector.detect(image, ["red block"], with_heatmap=True)
    heat = result.heatmaps[0]
    cell = result.heatmap_cell
    assert heat.shape == (480 // cell, 640 // cell)
    inner = heat[64 // cell:192 // cell, 96 // cell:224 // cell]
    assert inner.min() > 0.9
    outer = heat.copy()
    outer[64 // cell:192 // cell, 96 // cell:224 // cell] = 0
    assert outer.max() < 0.05  # the dense map is sharp at its 16 px cells


@pytest.mark.slow
def test_run_time_switch_and_fallback_warns_once(caplog) -> None:
    encoder = known_answer.load("linear")
    detector = Detector(encoder)
    scene = make_scene(np.random.default_rng(4), distractors=1)
    crop_mode = detector.detect(scene.image, [scene.target])
    detector.configure(HYBRID)
    assert detector.hybrid
    hybrid = detector.detect(scene.image, [scene.target])
    assert hybrid.crops < crop_mode.crops and hybrid.targets[0].present

    plain = Detector(CropsOnly())
    with caplog.at_level(logging.WARNING):
        plain.configure(HYBRID)
        plain.configure(HYBRID.with_changes(verify_crops=8))
    warnings = [r for r in caplog.records if "encode_dense" in r.getMessage()]
    assert len(warnings) == 1 and "crop mode runs" in warnings[0].getMessage()
    assert not plain.hybrid
    result = plain.detect(scene.image, [scene.target])
    assert result.crops == crop_mode.crops and result.targets[0].present


def test_regions_are_components_strongest_first() -> None:
    margin = np.full((10, 12), -5.0)
    margin[1:3, 1:4] = 2.0      # weaker blob
    margin[6:9, 7:10] = 4.0     # stronger blob
    margin[5, 0] = -1.0         # below the level halfway from the floor (-5) to the peak
    found = regions(margin, 3)
    assert [(r.start, r.stop, c.start, c.stop) for r, c, _ in found] == [(6, 9, 7, 10),
                                                                        (1, 3, 1, 4)]
    assert [p for _, _, p in found] == [4.0, 2.0]
    assert len(regions(margin, 1)) == 1
    flat = regions(np.zeros((4, 4)), 3)  # nothing stands out: the first peak cell alone
    assert len(flat) == 1 and flat[0][2] == 0.0


def test_margin_is_the_target_against_the_best_background_or_neutral() -> None:
    logits = np.array([[5.0, 1.0, 2.0, 3.0],    # two targets, one background, neutral
                       [0.0, 4.0, 6.0, 1.0]])
    np.testing.assert_allclose(margin_map(logits, 2), [[2.0, -2.0], [-6.0, -2.0]])


@pytest.mark.parametrize("curve", [lambda s: 1 - (1 - s) ** 8, lambda s: 0.9 + 0.1 * np.sqrt(s),
                                   lambda s: np.exp(20 * s)])
def test_cell_fit_puts_edges_inside_the_cut_cells_whatever_the_curve(curve) -> None:
    """Cells of 16 px; the object (40, 28)-(90, 76) cuts the cells on its edges. The
    margin is an increasing function of each cell's covered share: any such function
    gives the linear one's box over the same region, tighter than the cells touched."""
    rows, cols = 8, 10
    xs, ys = cell_bounds(rows, cols, 160, 128)
    truth = (40, 28, 90, 76)
    share = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            w = max(0, min(xs[j + 1], truth[2]) - max(xs[j], truth[0]))
            h = max(0, min(ys[i + 1], truth[3]) - max(ys[i], truth[1]))
            share[i, j] = w * h / ((xs[j + 1] - xs[j]) * (ys[i + 1] - ys[i]))
    (r, c, _), = regions(share, 1)
    linear = fit_cells(share, r, c, xs, ys)
    assert fit_cells(curve(share), r, c, xs, ys) == linear  # same region, same ranks
    touched = (32, 16, 96, 80)  # the cells the object touches
    assert box_iou(linear, truth) >= 0.75 > 0.6 > box_iou(touched, truth), linear


def test_scaled_boxes_shrink_about_the_centre_inside_the_frame() -> None:
    np.testing.assert_array_equal(scaled_boxes((100, 100, 200, 160), ((0.5, 0.5),), 640, 480),
                                  [[125, 115, 175, 145]])
    np.testing.assert_array_equal(scaled_boxes((0, 0, 100, 100), ((1.5, 1.0),), 640, 480),
                                  [[0, 0, 125, 100]])


@pytest.mark.slow
@pytest.mark.parametrize("member", members())
def test_hybrid_boxes_fit_on_hard_scenes_for_every_member(member: str) -> None:
    """The evaluation's hard scenes (30 px to half the frame, cut, textured, same-colour
    distractors, twins): on every member, saturating ones included, hybrid's box has
    IoU >= 0.5 with a target and its centre on one. Hybrid as merged before this test
    (verification refined with the probability-heatmap box) had IoU >= 0.5 on 3, 2 and
    3 of these 12 on concave, low_background and clip_like, and 10 on high_background."""
    detector = Detector(known_answer.load(member), HYBRID)
    scenes = hard_targets()
    fitted, pointed = 0, 0
    for scene in scenes:
        found = detector.detect(scene.image, [scene.target]).targets[0]
        assert found.present, (member, found.score)
        fitted += max(box_iou(found.box, t) for t in scene.target_boxes) >= 0.5
        pointed += any(inside(found.box, t) for t in scene.target_boxes)
    assert fitted >= 11 and pointed >= 11, (member, fitted, pointed)


class ContextBlurred:
    """A dense encoder whose cells leak their neighbours' and the frame's content into
    their embeddings, as real CLIP patch features do (global attention)."""

    def __init__(self, inner, mix: float = 0.5):
        self._inner, self.mix = inner, mix
        self.input_size, self.logit_scale = inner.input_size, inner.logit_scale
        self.encode_images, self.encode_texts = inner.encode_images, inner.encode_texts

    def encode_dense(self, image):
        import torch.nn.functional as F

        cells = self._inner.encode_dense(image)
        grid = cells.permute(2, 0, 1)[None]
        near = F.avg_pool2d(grid, 3, 1, 1, count_include_pad=False)[0].permute(1, 2, 0)
        frame = cells.mean(dim=(0, 1), keepdim=True)
        return (1 - self.mix) * cells + self.mix * (0.7 * near + 0.3 * frame)


DENSE_VARIANTS = ("cells_32px", "cells_48px", "context_blurred")


def member_variants() -> list:
    """Each member with one of the three dense variants, in turn: every member and
    every variant is covered, each variant on four members (the full cross product,
    three times as long: ``CLIP_PERCEPTION_FULL_FAMILY=1``)."""
    full = os.environ.get("CLIP_PERCEPTION_FULL_FAMILY") == "1"
    out = []
    for i, member in enumerate(members()):
        for j, variant in enumerate(DENSE_VARIANTS):
            if full or j == i % len(DENSE_VARIANTS):
                out.append(pytest.param(member, variant, id=f"{member}-{variant}"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("member,variant", member_variants())
def test_hybrid_boxes_hold_on_coarser_and_blurrier_dense_features(member: str,
                                                                  variant: str) -> None:
    """The family's dense path is exact per 16 px cell; real dense features are coarser
    (ViT-B/32's cells cover about 46 frame pixels at 640x480) and mix in context. With
    32 or 48 px cells, or cells blended with their neighbours and the frame, hybrid
    still fits the targets on every member. Hybrid before the cell fit had IoU >= 0.5
    on 3 to 5 of these 12 on the saturating members (32 px cells and blurred)."""
    if variant.startswith("cells_"):
        encoder = known_answer.load(member, patch=int(variant[6:8]))
    else:
        encoder = ContextBlurred(known_answer.load(member))
    detector = Detector(encoder, HYBRID)
    scenes = hard_targets()
    fitted, pointed = 0, 0
    for scene in scenes:
        found = detector.detect(scene.image, [scene.target]).targets[0]
        assert found.present, (member, variant, found.score)
        fitted += max(box_iou(found.box, t) for t in scene.target_boxes) >= 0.5
        pointed += any(inside(found.box, t) for t in scene.target_boxes)
    assert fitted >= 11 and pointed >= 11, (member, variant, fitted, pointed)


def test_zoom_only_for_boxes_under_four_cells_and_its_region_stays_inside() -> None:
    cell = (46.0, 48.0)
    assert needs_zoom((100, 100, 150, 400), cell)        # 50 px wide: about one cell
    assert not needs_zoom((100, 100, 300, 300), cell)    # over 4 cells both ways
    assert zoom_region((100, 100, 150, 140), cell, 640, 480) == (54, 52, 196, 188)
    assert zoom_region((0, 0, 300, 200), cell, 640, 480) == (0, 0, 450, 300)
    assert zoom_region((600, 440, 640, 480), cell, 640, 480) == (554, 392, 640, 480)


def test_zoom_level_comes_from_the_cells_outside_the_first_box() -> None:
    """In a zoomed region the object can fill most cells: the map's median then sits on
    the object and the level cuts the object itself; the cells outside the first pass's
    box give the background level instead."""
    margin = np.full((10, 10), -4.0)
    margin[1:9, 1:9] = 3.0            # the object: 64 of the 100 cells
    margin[4, 4] = 5.0                # a noise peak on it
    xs, ys = cell_bounds(10, 10, 100, 100)
    assert np.median(margin) == 3.0
    assert outside_median(margin, xs, ys, (10, 10, 90, 90)) == -4.0
    assert outside_median(margin, xs, ys, (0, 0, 100, 100)) is None
    (r, c, _), = regions(margin, 1, floor=-4.0)
    assert (r.start, r.stop, c.start, c.stop) == (1, 9, 1, 9)
    (r, c, _), = regions(margin, 1)   # the median's level: the noise peak alone
    assert (r.start, r.stop, c.start, c.stop) == (4, 5, 4, 5)


@pytest.mark.slow
@pytest.mark.parametrize("member", ["linear", "clip_like"])
def test_zoom_pass_refits_a_small_object_on_coarse_cells(member: str) -> None:
    """A 40 px block on 48 px cells: the first pass can only place its edges within a
    cell; the zoomed pass puts them within a few pixels, and counts as a dense pass."""
    image = np.full((480, 640, 3), 128, np.uint8)
    truth = (301, 203, 341, 243)
    paint(image, truth, "red", np.random.default_rng(0))
    encoder = known_answer.load(member, patch=48)
    zoomed = Detector(encoder, HYBRID).detect(image, ["red block"])
    plain = Detector(encoder, HYBRID.with_changes(hybrid_zoom=False)).detect(image,
                                                                             ["red block"])
    assert zoomed.dense_passes == 2 and plain.dense_passes == 1
    assert box_iou(zoomed.targets[0].box, truth) >= 0.7, zoomed.targets[0].box
    assert box_iou(zoomed.targets[0].box, truth) > box_iou(plain.targets[0].box, truth)
    big = (100, 100, 400, 380)
    large = np.full((480, 640, 3), 128, np.uint8)
    paint(large, big, "red", np.random.default_rng(1))
    assert Detector(encoder, HYBRID).detect(large, ["red block"]).dense_passes == 1


def test_dense_heatmap_maps_cells_to_pixels() -> None:
    prob = np.arange(6, dtype=float).reshape(2, 3)  # cells of 160 x 120 pixels at 480x240
    heat = dense_heatmap(prob, 480, 240, 8)
    assert heat.shape == (30, 60)
    assert heat[0, 0] == 0 and heat[0, 19] == 0 and heat[0, 20] == 1 and heat[14, 59] == 2
    assert heat[15, 0] == 3 and heat[29, 59] == 5


@pytest.mark.slow
def test_evaluate_prints_hybrid_beside_crop_mode(capsys) -> None:
    from clip_perception.tools.evaluate import main

    assert main(["--model", "clip_perception.testing.known_answer:linear", "--mode", "hybrid",
                 "--scenes", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines if "presence_acc=" in line]
    assert names == ["best_window", "refined", "hybrid"]
    hybrid = next(line for line in lines if line.startswith("hybrid"))
    assert float(hybrid.split("crops/frame=")[1].split()[0]) <= HYBRID.verify_crops


@pytest.mark.slow
def test_evaluate_dense_cell_sets_the_known_answer_cell_size(monkeypatch, capsys) -> None:
    """--dense-cell reaches the encoder (its dense grid), and is refused with --model."""
    from clip_perception.tools import evaluate

    seen = []
    real = evaluate.with_dense_cell
    monkeypatch.setattr(evaluate, "with_dense_cell",
                        lambda encoder, cell: seen.append(real(encoder, cell)) or seen[-1])
    assert evaluate.main(["--encoder", "concave", "--mode", "hybrid", "--scenes", "2",
                          "--dense-cell", "48"]) == 0
    assert seen[0].patch == 48
    image = torch.zeros(1, 3, 480, 640)
    assert seen[0].encode_dense(image).shape[:2] == (10, 13)
    with pytest.raises(SystemExit):
        evaluate.main(["--model", "clip_perception.testing.known_answer:linear",
                       "--dense-cell", "48"])
    capsys.readouterr()


@pytest.mark.slow
def test_evaluate_no_hybrid_zoom_reaches_the_detector(monkeypatch, capsys) -> None:
    from clip_perception.tools import evaluate

    configs = []
    real = evaluate.Detector
    monkeypatch.setattr(evaluate, "Detector",
                        lambda encoder, config: configs.append(config) or real(encoder, config))
    assert evaluate.main(["--encoder", "linear", "--mode", "hybrid", "--scenes", "2",
                          "--no-hybrid-zoom"]) == 0
    hybrid = [c for c in configs if c.mode == "hybrid"]
    assert hybrid and not any(c.hybrid_zoom for c in hybrid)
    configs.clear()
    assert evaluate.main(["--encoder", "linear", "--mode", "hybrid", "--scenes", "2"]) == 0
    assert all(c.hybrid_zoom for c in configs if c.mode == "hybrid")
    capsys.readouterr()


def test_benchmark_and_ros_benchmark_take_a_mode() -> None:
    from clip_perception.tools.benchmark import parse_args

    assert parse_args(["--mode", "hybrid"]).mode == "hybrid"
    assert parse_args([]).mode == "crops"
    assert parse_args(["--ros", "--mode", "hybrid"]).mode == "hybrid"
    with pytest.raises(SystemExit):
        parse_args(["--mode", "dense"])
