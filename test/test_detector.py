"""The detection pipeline with the known-answer colour encoder.

ColorEncoder embeds an image as the fraction of its pixels of each palette
colour plus an "other" share; "red block" embeds on the red axis, the scene
words (table, wall...) on "other", "object" evenly over all colours. So for
a window whose red fraction is ``f`` (the rest grey) the probabilities and
the best window follow from geometry alone.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from clip_perception.core.detect.config import DEFAULT_BACKGROUNDS, ConfigError, DetectorConfig
from clip_perception.core.detect.detector import Detector
from clip_perception.core.detect.windows import box_iou, window_grid
from clip_perception.core.io.image_formats import frame_from_buffer
from clip_perception.testing.color_encoder import PALETTE, ColorEncoder
from clip_perception.testing.scenes import make_scene

W, H = 256, 192
GREY = (128, 128, 128)  # matches no palette colour
LOGIT_SCALE = 10.0  # ColorEncoder's
N_COLOURS = len(PALETTE)


def image_with(*blocks: tuple[str, tuple[int, int, int, int]], width: int = W,
               height: int = H) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = GREY
    for colour, (x0, y0, x1, y1) in blocks:
        image[y0:y1, x0:x1] = PALETTE[colour]
    return image


def expected_probability(target: float, other: float = 0.0, colour_word: bool = True) -> float:
    """Target probability for a window that is ``target`` the target colour,
    ``other`` another palette colour and grey for the rest.

    With the normalised embedding (target, other, grey)/n the cosines are:
    target phrase target/n, each background grey/n, the neutral prompt
    (target + other)/(n sqrt(8)); a phrase with no colour word embeds like
    the neutral prompt.
    """
    grey = 1.0 - target - other
    n = math.sqrt(target**2 + other**2 + grey**2)
    neutral = (target + other) / (n * math.sqrt(N_COLOURS))
    mine = target / n if colour_word else neutral
    rivals = len(DEFAULT_BACKGROUNDS) * math.exp(LOGIT_SCALE * grey / n)
    rivals += math.exp(LOGIT_SCALE * neutral)
    return math.exp(LOGIT_SCALE * mine) / (math.exp(LOGIT_SCALE * mine) + rivals)


def red_fraction(window, block) -> float:
    x0, y0, x1, y1 = window
    inter = (max(0, min(x1, block[2]) - max(x0, block[0]))
             * max(0, min(y1, block[3]) - max(y0, block[1])))
    return inter / ((x1 - x0) * (y1 - y0))


def best_windows(windows: np.ndarray, block) -> set[tuple[int, ...]]:
    """Sliding windows (not the whole frame) with the largest red fraction."""
    sliding = [tuple(int(v) for v in w) for w in windows if tuple(w) != (0, 0, W, H)]
    top = max(red_fraction(w, block) for w in sliding)
    return {w for w in sliding if red_fraction(w, block) == top}


def centre_inside(box, block) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return block[0] <= cx < block[2] and block[1] <= cy < block[3]


@pytest.fixture
def encoder() -> ColorEncoder:
    return ColorEncoder("cpu", input_size=32)


@pytest.fixture
def detector(encoder: ColorEncoder) -> Detector:
    return Detector(encoder, DetectorConfig())


@pytest.mark.slow
def test_coarse_windows_follow_the_config(detector: Detector) -> None:
    config = detector.config
    detection = detector.detect(image_with(), ["red block"])
    expected = window_grid(W, H, config.window_scales, config.window_stride,
                           config.include_full_frame)
    assert np.array_equal(detection.windows, expected)
    assert (detection.width, detection.height) == (W, H)
    assert len(detection.targets[0].window_scores) == len(detection.windows)


@pytest.mark.slow
@pytest.mark.parametrize("block", [(48, 48, 96, 96), (208, 144, 256, 192), (0, 0, 96, 96),
                                   (96, 96, 192, 192)])
def test_block_on_a_coarse_window_is_the_best_window(detector: Detector, block) -> None:
    windows = detector.windows_for(W, H)
    assert list(block) in windows.tolist(), "the block must lie exactly on a window"
    result = detector.detect(image_with(("red", block)), ["red block"]).targets[0]
    candidates = best_windows(windows, block)
    assert block in candidates  # full coverage: fraction 1
    assert result.best_window in candidates
    assert result.present and result.score >= detector.config.presence_threshold
    assert result.score == pytest.approx(expected_probability(1.0), abs=1e-4)


@pytest.mark.slow
def test_best_window_is_the_one_the_block_fills_most(detector: Detector) -> None:
    block = (52, 100, 94, 140)  # inside the 48-px window (48, 96, 96, 144) only
    result = detector.detect(image_with(("red", block)), ["red block"]).targets[0]
    assert best_windows(detector.windows_for(W, H), block) == {(48, 96, 96, 144)}
    assert result.best_window == (48, 96, 96, 144)


@pytest.mark.slow
def test_frame_score_is_the_whole_frame_probability(detector: Detector) -> None:
    # the left half red: the whole-frame crop is exactly half red (256 -> 32 px, 8 px a column)
    detection = detector.detect(image_with(("red", (0, 0, W // 2, H))), ["red block"])
    result = detection.targets[0]
    full = detection.windows.tolist().index([0, 0, W, H])
    assert result.frame_score == result.window_scores[full]
    assert result.frame_score == pytest.approx(expected_probability(0.5), abs=1e-5)
    all_red = detector.detect(image_with(("red", (0, 0, W, H))), ["red block"]).targets[0]
    assert all_red.frame_score == pytest.approx(expected_probability(1.0), abs=1e-5)


def test_absent_target(detector: Detector) -> None:
    image = image_with(("blue", (48, 48, 96, 96)))
    result = detector.detect(image, ["red block"]).targets[0]
    assert not result.present
    # the best a red target gets is a window that is all blue: every class but the
    # neutral prompt is at cosine 0, so 1 / (1 + 6 + e^(10/sqrt 8)) ~ 0.024
    assert result.score == pytest.approx(expected_probability(0.0, other=1.0), abs=1e-4)
    assert result.score < 0.05
    assert not detector.detect(image, ["red block"]).present


@pytest.mark.slow
@pytest.mark.parametrize("block", [(48, 48, 96, 96), (100, 40, 160, 110), (30, 30, 130, 130),
                                   (150, 100, 230, 170), (60, 110, 124, 174), (0, 0, 64, 64),
                                   (192, 128, 256, 192)])
def test_refined_box_fits_the_block(detector: Detector, block) -> None:
    result = detector.detect(image_with(("red", block)), ["red block"]).targets[0]
    assert result.present
    assert box_iou(result.box, block) >= 0.7, result.box


@pytest.mark.slow
def test_refined_box_on_random_scenes(detector: Detector) -> None:
    """Textured background, random sizes and places: the box points at the block."""
    rng = np.random.default_rng(5)
    for _ in range(8):
        scene = make_scene(rng, W, H, target_colour="red", size_range=(40, 80), distractors=1)
        result = detector.detect(scene.image, [scene.target]).targets[0]
        assert result.present
        assert centre_inside(result.box, scene.target_box), (result.box, scene.target_box)
        assert box_iou(result.box, scene.target_box) >= 0.5, (result.box, scene.target_box)


def test_refinement_is_better_than_the_best_window(encoder: ColorEncoder) -> None:
    block = (100, 40, 160, 110)  # straddles coarse windows: no window fits it
    image = image_with(("red", block))
    refined = Detector(encoder, DetectorConfig()).detect(image, ["red block"]).targets[0]
    coarse = Detector(encoder, DetectorConfig(refine=False)).detect(image, ["red block"])
    assert coarse.crops == len(coarse.windows)
    assert coarse.targets[0].box == coarse.targets[0].best_window
    assert box_iou(refined.box, block) > box_iou(coarse.targets[0].box, block)


def test_two_targets_in_command_order(detector: Detector) -> None:
    red, blue = (48, 48, 96, 96), (160, 96, 208, 144)
    image = image_with(("red", red), ("blue", blue))
    detection = detector.detect(image, ["blue block", "red block"])
    assert [t.phrase for t in detection.targets] == ["blue block", "red block"]
    for result, block in zip(detection.targets, (blue, red)):
        assert result.present
        assert centre_inside(result.box, block)
        assert box_iou(result.box, block) >= 0.5
        assert result.best_window in best_windows(detection.windows, block)
    assert detection.present
    assert detection.crops <= detector.config.crop_budget


@pytest.mark.slow
def test_detection_present_only_when_all_targets_are(detector: Detector) -> None:
    image = image_with(("red", (48, 48, 96, 96)))
    detection = detector.detect(image, ["red block", "green block"])
    assert [t.present for t in detection.targets] == [True, False]
    assert not detection.present


def test_many_targets_each_find_their_block(detector: Detector) -> None:
    blocks = {"red": (48, 0, 96, 48), "blue": (192, 0, 240, 48),
              "green": (0, 144, 48, 192), "yellow": (144, 96, 192, 144)}
    image = image_with(*blocks.items())
    detection = detector.detect(image, [f"{c} block" for c in blocks])
    assert detection.crops <= detector.config.crop_budget
    assert detection.present
    for result, (colour, block) in zip(detection.targets, blocks.items()):
        assert result.phrase == f"{colour} block"
        assert centre_inside(result.box, block), (result.phrase, result.box)
        others = [b for c, b in blocks.items() if c != colour]
        assert all(box_iou(result.box, b) == 0 for b in others), (result.phrase, result.box)


@pytest.mark.slow
def test_many_targets_on_random_scenes(detector: Detector) -> None:
    """Four targets share the refinement budget; each box must still cover its block.

    (Cutting a refinement grid to fit a small budget used to leave the lower part
    of every hit unexplored: mean IoU fell to about 0.3.)
    """
    rng = np.random.default_rng(11)
    ious, pointing = [], []
    for _ in range(4):
        scene = make_scene(rng, 320, 240, size_range=(40, 80), distractors=3)
        detection = detector.detect(scene.image, [f"{o.colour} block" for o in scene.objects])
        assert detection.crops <= detector.config.crop_budget
        for result, obj in zip(detection.targets, scene.objects):
            ious.append(box_iou(result.box, obj.box))
            pointing.append(centre_inside(result.box, obj.box))
    assert len(ious) >= 12
    assert np.mean(pointing) >= 0.9
    assert np.mean(ious) >= 0.5, np.round(ious, 2)


@pytest.mark.slow
@pytest.mark.parametrize("budget", [31, 40, 60, 86, 200])
@pytest.mark.parametrize("n_targets", [1, 3])
def test_crops_within_budget(encoder: ColorEncoder, budget: int, n_targets: int) -> None:
    detector = Detector(encoder, DetectorConfig(crop_budget=budget))
    assert len(detector.windows_for(W, H)) <= budget  # else the coarse pass alone exceeds it
    targets = ["red block", "blue block", "green block"][:n_targets]
    detection = detector.detect(image_with(("red", (100, 40, 160, 110))), targets)
    assert len(detection.windows) <= detection.crops <= budget


@pytest.mark.slow
def test_text_embeddings_are_cached(encoder: ColorEncoder, detector: Detector) -> None:
    image = image_with(("red", (48, 48, 96, 96)))
    detector.detect(image, ["red block"])
    calls = encoder.text_calls
    assert calls >= 1
    detector.detect(image, ["red block"])
    detector.detect(image, ["red block"])
    assert encoder.text_calls == calls
    detector.detect(image, ["red block", "blue block"])  # one new phrase: one text pass
    assert encoder.text_calls == calls + 1
    detector.detect(image, ["blue block"])
    assert encoder.text_calls == calls + 1


def test_set_targets_embeds_once(encoder: ColorEncoder, detector: Detector) -> None:
    detector.set_targets(["red block"])
    assert detector.targets == ("red block",)
    calls = encoder.text_calls
    image = image_with(("red", (48, 48, 96, 96)))
    detection = detector.detect(image)
    assert [t.phrase for t in detection.targets] == ["red block"]
    assert encoder.text_calls <= calls + 1  # at most the background/neutral context
    detector.detect(image)
    assert encoder.text_calls <= calls + 1


def test_no_targets_is_an_empty_detection(detector: Detector) -> None:
    detection = detector.detect(image_with())
    assert detection.targets == [] and not detection.present and detection.crops == 0


@pytest.mark.parametrize("backgrounds", [(), ("",), ("  ", "wall")])
def test_a_softmax_without_competitors_is_refused(backgrounds) -> None:
    with pytest.raises(ConfigError, match="background_prompts"):
        DetectorConfig(background_prompts=backgrounds)


def test_a_target_that_matches_nothing_stays_well_below_one(detector: Detector) -> None:
    # "hammer" names no colour, so it embeds exactly like the neutral prompt and
    # can at best tie with it, even on a frame that is all one colour.
    result = detector.detect(image_with(("red", (0, 0, W, H))), ["hammer"]).targets[0]
    expected = expected_probability(1.0, colour_word=False)
    assert expected < 0.5
    assert result.score == pytest.approx(expected, abs=1e-4)
    assert not result.present


def test_heatmap_shape_and_peak(encoder: ColorEncoder) -> None:
    width, height, block = 250, 190, (150, 40, 214, 104)
    detector = Detector(encoder, DetectorConfig(heatmap_stride=8))
    image = image_with(("red", block), width=width, height=height)
    detection = detector.detect(image, ["red block"], with_heatmap=True)
    assert detection.heatmap_cell == 8
    assert len(detection.heatmaps) == 1
    heat = detection.heatmaps[0]
    assert heat.shape == (math.ceil(height / 8), math.ceil(width / 8))
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    centre = ((col + 0.5) * 8, (row + 0.5) * 8)
    assert block[0] <= centre[0] < block[2] and block[1] <= centre[1] < block[3]
    assert heat.max() <= 1.0 and heat.min() >= 0.0
    assert detector.detect(image, ["red block"]).heatmaps == []


def test_bgr_frame_gives_the_same_result(detector: Detector) -> None:
    rgb = image_with(("red", (100, 40, 160, 110)), ("blue", (20, 120, 70, 170)))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    frame = frame_from_buffer("bgr8", H, W, W * 3, bgr)
    targets = ["red block", "blue block"]
    a = detector.detect(rgb, targets)
    b = detector.detect(frame, targets)
    for x, y in zip(a.targets, b.targets):
        assert x.box == y.box and x.best_window == y.best_window
        assert x.score == pytest.approx(y.score, abs=1e-6)
        np.testing.assert_allclose(x.window_scores, y.window_scores, atol=1e-6)
    assert a.crops == b.crops


def test_configure_keeps_the_text_cache_unless_prompts_change(encoder: ColorEncoder,
                                                              detector: Detector) -> None:
    image = image_with(("red", (48, 48, 96, 96)))
    detector.detect(image, ["red block"])
    calls = encoder.text_calls
    detector.configure(detector.config.with_changes(crop_budget=60))
    detector.detect(image, ["red block"])
    assert encoder.text_calls == calls
    detector.configure(detector.config.with_changes(neutral_prompt="thing"))
    detector.detect(image, ["red block"])
    assert encoder.text_calls > calls


def test_refine_stages_zero_runs_no_finer_pass() -> None:
    image = image_with(("red", (64, 48, 112, 96)))
    detector = Detector(ColorEncoder(), DetectorConfig(refine_stages=0))
    result = detector.detect(image, targets=["red block"])
    assert not result.refined
    assert result.crops == len(result.windows)
    assert result.targets[0].box == result.targets[0].best_window


def test_frames_go_on_while_a_new_target_is_embedded():
    """A slow text pass for a new target does not hold up detect() on the current one."""
    import threading

    from clip_perception.testing.color_encoder import ColorEncoder

    class SlowText(ColorEncoder):
        def __init__(self):
            super().__init__(device="cpu")
            self.inside, self.leave = threading.Event(), threading.Event()

        def encode_texts(self, texts):
            if any("blue" in t for t in texts):
                self.inside.set()
                self.leave.wait(10)
            return super().encode_texts(texts)

    encoder = SlowText()
    detector = Detector(encoder)
    detector.set_targets(["red block"])
    image = np.zeros((64, 64, 3), np.uint8)
    embedding = threading.Thread(target=detector.set_targets, args=(["blue block"],))
    embedding.start()
    try:
        assert encoder.inside.wait(5)
        done = threading.Event()
        worker = threading.Thread(target=lambda: (detector.detect(image), done.set()))
        worker.start()
        assert done.wait(5), "detect() waited for another target's text pass"
        assert detector.targets == ("red block",)
    finally:
        encoder.leave.set()
        embedding.join(5)
    assert detector.targets == ("blue block",)
