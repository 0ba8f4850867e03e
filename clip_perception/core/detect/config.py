"""Settings of the detection pipeline, validated in one place."""

from __future__ import annotations

import string
from dataclasses import dataclass, fields, replace

DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
)
DEFAULT_BACKGROUNDS = ("table", "wall", "floor", "shelf", "background", "clutter")
DEFAULT_NEUTRAL = "object"
SINGLE_PASS_STRIDE = 0.5
# Allowed values of the numeric settings, closed intervals: the one definition
# DetectorConfig validates against and the node's parameter descriptors show.
RANGES: dict[str, tuple[float, float]] = {
    "window_stride": (0.05, 1.0),
    "presence_threshold": (0.01, 0.99),
    "crop_budget": (1, 4096),
    "refine_stages": (0, 4),
    "heatmap_stride": (1, 64),
    "box_alpha": (0.01, 0.99),
    "verify_crops": (1, 256),
}
WINDOW_SCALE_RANGE = (0.02, 1.0)  # each of window_scales
BOX_METHODS = ("rank_fit", "heatmap")
MODES = ("crops", "hybrid")


class ConfigError(ValueError):
    """A setting is out of range; the message names it."""


def _is_template(template) -> bool:
    """Exactly one ``{}`` field and nothing else that ``str.format`` would choke on."""
    try:
        fields_ = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except (TypeError, ValueError):  # not a string, or a lone brace
        return False
    return fields_ == [""]


@dataclass(frozen=True)
class DetectorConfig:
    """How frames are cut into windows, scored and localized.

    Attributes:
        prompt_templates: prompt ensemble; ``{}`` is replaced by the phrase.
        background_prompts: scene words every target competes against.
        neutral_prompt: a generic "some object" class; a window that matches
            no prompt well goes to it instead of inflating the target.
        window_scales: window sides as fractions of the frame's short side.
        window_stride: step between windows as a fraction of the window side.
        include_full_frame: also score the whole frame.
        presence_threshold: target probability at which the object counts as
            present (see docs/outputs.md).
        refine: run a second, finer pass of windows around the best hit.
        crop_budget: the most crops encoded per frame, all passes together.
        refine_stages: how many finer passes follow the coarse one.
        heatmap_stride: pixels per heatmap cell (the map is upsampled for output).
        box_method: how the finer windows become a box: ``rank_fit`` (the box
            whose window shares best explain the order of the window scores,
            independent of the encoder's response curve) or ``heatmap`` (the
            box of probability-heatmap mass above ``box_alpha``).
        box_alpha: probability a heatmap cell must exceed to join the box
            (``box_method: heatmap`` only).
        mode: ``crops`` (sliding windows, coarse to fine) or ``hybrid`` (one dense
            pass proposes regions, a few crops verify them; needs an encoder
            with ``encode_dense``, else crops run).
        verify_crops: in hybrid mode, the most crops encoded per frame.
        hybrid_zoom: in hybrid mode, refit a box that spans fewer than 4 dense cells on
            a second dense pass over the region around it (one more pass per
            such target).
    """

    prompt_templates: tuple[str, ...] = DEFAULT_TEMPLATES
    background_prompts: tuple[str, ...] = DEFAULT_BACKGROUNDS
    neutral_prompt: str = DEFAULT_NEUTRAL
    window_scales: tuple[float, ...] = (0.5, 0.25)
    window_stride: float = 1.0
    include_full_frame: bool = True
    presence_threshold: float = 0.5
    refine: bool = True
    crop_budget: int = 86
    refine_stages: int = 2
    heatmap_stride: int = 8
    box_alpha: float = 0.3
    box_method: str = "rank_fit"
    mode: str = "crops"
    verify_crops: int = 12
    hybrid_zoom: bool = True

    def __post_init__(self) -> None:
        for name in ("prompt_templates", "background_prompts"):
            value = getattr(self, name)  # a lone string is one prompt, not its characters
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        object.__setattr__(self, "window_scales", tuple(float(s) for s in self.window_scales))
        if not self.prompt_templates:
            raise ConfigError(
                "prompt_templates is empty; give at least one, e.g. 'a photo of a {}.'")
        for template in self.prompt_templates:
            if not _is_template(template):
                raise ConfigError(f"prompt template {template!r} must contain '{{}}' exactly once "
                                  "and no other braces (write '{{' for a literal brace)")
        if not self.background_prompts or not all(p.strip() for p in self.background_prompts):
            raise ConfigError(
                "background_prompts must hold at least one non-empty prompt: with no "
                "competitor a softmax always gives the target 1.0"
            )
        if not self.neutral_prompt.strip():
            raise ConfigError("neutral_prompt is empty")
        if not self.window_scales and not self.include_full_frame:
            raise ConfigError("no windows: give window_scales or include_full_frame")
        low, high = WINDOW_SCALE_RANGE
        for scale in self.window_scales:
            if not low <= scale <= high:  # False for NaN too
                raise ConfigError(f"window scale {scale} is outside [{low}, {high}]")
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"{name} {value} is outside [{low}, {high}]")
        if self.box_method not in BOX_METHODS:
            raise ConfigError(f"box_method {self.box_method!r} is not one of "
                              f"{', '.join(BOX_METHODS)}")
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")

    def single_pass(self) -> DetectorConfig:
        """The classic one-pass grid: no refinement, windows at half-window stride.

        At 640x480 with the default scales that is 86 crops, the budget the
        refined pipeline must stay within.
        """
        return self.with_changes(refine=False, window_stride=SINGLE_PASS_STRIDE)

    def with_changes(self, **changes) -> DetectorConfig:
        """A validated copy with ``changes`` applied."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)
