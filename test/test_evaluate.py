"""The evaluation tool: AUROC, quality on generated scenes, and the command line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clip_perception.core.detect.config import DetectorConfig
from clip_perception.core.detect.windows import window_grid
from clip_perception.testing.color_encoder import ColorEncoder
from clip_perception.testing.scenes import scene_set
from clip_perception.tools.evaluate import auroc, compare, main


@pytest.mark.parametrize("positive, negative, expected", [
    ([0.9, 0.8, 0.7], [0.1, 0.2], 1.0),  # perfect
    ([0.1, 0.2], [0.9, 0.8, 0.7], 0.0),  # inverted
    ([0.5, 0.5], [0.5, 0.5, 0.5], 0.5),  # all tied
    ([0.5, 0.9], [0.5, 0.1], 3.5 / 4),  # one tie of four pairs counts half
    ([0.3, 0.6], [0.4], 0.5),
])
def test_auroc(positive, negative, expected) -> None:
    assert auroc(positive, negative) == pytest.approx(expected)


def test_auroc_needs_both_classes() -> None:
    assert math.isnan(auroc([], [0.1]))
    assert math.isnan(auroc([0.9], []))


@pytest.mark.slow
def test_quality_on_generated_scenes() -> None:
    width, height = 256, 192
    scenes = scene_set(24, seed=2, width=width, height=height, size_range=(24, 56))
    assert sum(s.target_box is None for s in scenes) == 6  # a quarter without the target
    config = DetectorConfig()
    best_window, refined = compare(ColorEncoder("cpu", input_size=32), scenes, config)
    assert best_window.name == "best_window" and refined.name == "refined"
    assert best_window.scenes == refined.scenes == 24

    assert refined.presence_accuracy >= 0.9
    assert refined.auroc >= 0.95
    assert refined.pointing >= 0.9
    assert refined.iou50 >= 0.8
    assert refined.mean_iou >= 0.6
    assert refined.crops_per_frame <= config.crop_budget

    assert best_window.pointing >= 0.8
    assert refined.mean_iou > best_window.mean_iou
    single = config.single_pass()
    assert best_window.crops_per_frame == len(window_grid(
        width, height, single.window_scales, single.window_stride, single.include_full_frame))


@pytest.mark.slow
def test_main_prints_both_reports(capsys) -> None:
    assert main(["--scenes", "4", "--size", "160x120", "--device", "cpu", "--seed", "0",
                 "--threshold", "0.4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    sizes = [line for line in lines if line.startswith("  size ")]
    assert sizes, "a line per object-size bucket"
    lines = [line for line in lines if line not in sizes]
    assert len(lines) == 4
    assert lines[3].startswith("presence threshold: accuracy")
    assert lines[0].startswith("model=clip_perception.testing.color_encoder:factory")
    assert "scenes=4" in lines[0] and "size=160x120" in lines[0] and "threshold=0.4" in lines[0]
    assert lines[1].startswith("best_window") and lines[2].startswith("refined")
    for line in lines[1:3]:
        for field in ("scenes=4", "presence_acc=", "auroc=", "pointing=", "iou50=",
                      "mean_iou=", "crops/frame=", "s/frame="):
            assert field in line


def test_main_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        main(["--scenes", "many"])


def test_best_threshold_separates_scores_and_prefers_the_middle() -> None:
    from clip_perception.tools.evaluate import best_threshold

    threshold, accuracy = best_threshold([0.9, 0.8, 0.7], [0.1, 0.2])
    assert accuracy == 1.0 and 0.2 < threshold <= 0.7
    assert threshold == 0.5, "every threshold in (0.2, 0.7] is perfect; 0.5 is nearest the middle"
    threshold, accuracy = best_threshold([0.9, 0.3], [0.4, 0.1])
    assert accuracy == 0.75 and threshold == 0.5, "0.2, 0.5 and 0.65 tie; 0.5 is nearest"


@pytest.mark.slow
def test_labelled_bag_round_trips_and_evaluates_like_the_scenes(tmp_path) -> None:
    from clip_perception.tools.labelled_bag import read_labelled_bag, write_labelled_bag

    scenes = scene_set(8, seed=4)
    bag = write_labelled_bag(tmp_path / "labelled", scenes, storage="mcap")
    back = read_labelled_bag(bag)
    assert [(s.target, s.target_box) for s in back] == [(s.target, s.target_box) for s in scenes]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(back, scenes))


@pytest.mark.slow
def test_main_evaluates_a_labelled_bag(tmp_path, capsys) -> None:
    from clip_perception.tools.labelled_bag import write_labelled_bag

    bag = write_labelled_bag(tmp_path / "labelled", scene_set(8, seed=4))
    assert main(["--bag", str(bag), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "scenes=8 bag=" in text and "refined" in text and "presence threshold:" in text


@pytest.mark.slow
def test_main_all_encoders_prints_a_row_per_family_member(capsys) -> None:
    from clip_perception.testing.known_answer import family

    assert main(["--all-encoders", "--scenes", "2", "--size", "160x120", "--device", "cpu",
                 "--seed", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("encoders=") and "scenes=2" in lines[0]
    rows = lines[1:-1]
    assert [row.split()[0] for row in rows] == list(family())
    for row in rows:
        for field in ("presence_acc=", "pointing=", "iou50=", "crops/frame=", "iou50[", "goals="):
            assert field in row
    assert lines[-1].startswith("goals (presence >= 0.98")


@pytest.mark.slow
def test_main_takes_a_family_member_by_name(capsys) -> None:
    assert main(["--encoder", "concave", "--scenes", "4", "--size", "160x120", "--device", "cpu"]
                ) == 0
    assert capsys.readouterr().out.startswith(
        "model=clip_perception.testing.known_answer:concave")
    with pytest.raises(SystemExit):
        main(["--encoder", "nope"])


@pytest.mark.slow
def test_object_sizes_limit_the_hard_scenes_to_one_bucket(capsys) -> None:
    assert main(["--encoder", "linear", "--scenes", "6", "--device", "cpu", "--seed", "0",
                 "--object-sizes", "30-60"]) == 0
    out = capsys.readouterr().out
    assert "object_sizes=30-60" in out
    sizes = [line.split()[1] for line in out.splitlines() if line.startswith("  size ")]
    assert sizes and set(sizes) == {"30-60"}, out


def test_window_stride_reaches_the_detector_and_a_bad_one_is_refused(monkeypatch,
                                                                     capsys) -> None:
    from clip_perception.tools import evaluate

    configs = []
    real = evaluate.Detector
    monkeypatch.setattr(evaluate, "Detector",
                        lambda encoder, config: configs.append(config) or real(encoder, config))
    assert main(["--encoder", "linear", "--scenes", "2", "--device", "cpu",
                 "--window-stride", "0.5"]) == 0
    assert configs and all(c.window_stride == 0.5 for c in configs)
    assert "window_stride=0.5" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--encoder", "linear", "--scenes", "2", "--window-stride", "0"])
    assert "window_stride 0.0 is outside" in capsys.readouterr().err
