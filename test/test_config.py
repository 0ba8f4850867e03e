"""DetectorConfig validation."""

from __future__ import annotations

import pytest

from clip_perception.core.detect.config import RANGES, ConfigError, DetectorConfig


def test_defaults_are_valid() -> None:
    config = DetectorConfig()
    assert config.background_prompts and config.prompt_templates
    assert all(t.format("x") != t for t in config.prompt_templates)


@pytest.mark.parametrize("changes, names", [
    ({"prompt_templates": ()}, "prompt_templates"),
    ({"prompt_templates": ("a photo",)}, "a photo"),
    ({"prompt_templates": ("{} and {}",)}, "exactly once"),
    ({"prompt_templates": ("a {x} of a {}",)}, "exactly once"),  # would KeyError in format
    ({"prompt_templates": ("a {} {0}",)}, "exactly once"),  # would ValueError in format
    ({"prompt_templates": ("{{}}",)}, "exactly once"),  # a literal "{}", no phrase
    ({"prompt_templates": ("a {",)}, "exactly once"),
    ({"background_prompts": ()}, "background_prompts"),
    ({"background_prompts": ("wall", " ")}, "background_prompts"),
    ({"neutral_prompt": " "}, "neutral_prompt"),
    ({"window_scales": (), "include_full_frame": False}, "no windows"),
    ({"window_scales": (0.01,)}, "window scale"),
    ({"window_scales": (1.5,)}, "window scale"),
    ({"window_stride": 0.0}, "window_stride"),
    ({"window_stride": 1.5}, "window_stride"),
    ({"presence_threshold": 0.0}, "presence_threshold"),
    ({"presence_threshold": 1.0}, "presence_threshold"),
    ({"presence_threshold": float("nan")}, "presence_threshold"),
    ({"crop_budget": 0}, "crop_budget"),
    ({"refine_stages": 5}, "refine_stages"),
    ({"heatmap_stride": 0}, "heatmap_stride"),
    ({"box_alpha": 1.0}, "box_alpha"),
])
def test_invalid_settings_name_the_problem(changes: dict, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        DetectorConfig(**changes)
    with pytest.raises(ConfigError, match=names):
        DetectorConfig().with_changes(**changes)


def test_templates_with_escaped_braces_are_fine() -> None:
    config = DetectorConfig(prompt_templates=("{} {{on a table}}",))
    assert config.prompt_templates[0].format("cup") == "cup {on a table}"


def test_a_lone_string_is_one_prompt() -> None:
    config = DetectorConfig(background_prompts="table", prompt_templates="a photo of a {}.")
    assert config.background_prompts == ("table",)
    assert config.prompt_templates == ("a photo of a {}.",)


def test_lists_become_tuples() -> None:
    config = DetectorConfig(background_prompts=["wall"], window_scales=[1, 0.5])
    assert config.background_prompts == ("wall",)
    assert config.window_scales == (1.0, 0.5)
    hash(config)  # frozen and hashable


def test_with_changes() -> None:
    config = DetectorConfig()
    changed = config.with_changes(crop_budget=40, refine=False)
    assert (changed.crop_budget, changed.refine) == (40, False)
    assert config == DetectorConfig()  # the original is untouched
    with pytest.raises(ConfigError, match="unknown setting.*crop_budgte"):
        config.with_changes(crop_budgte=40)


@pytest.mark.parametrize("name", sorted(RANGES))
def test_ranges_are_the_bounds_the_config_enforces(name: str) -> None:
    """RANGES (which the node's parameter descriptors show) is what DetectorConfig accepts."""
    low, high = RANGES[name]
    assert low <= getattr(DetectorConfig(), name) <= high  # the default is inside
    for value in (low, high):
        assert getattr(DetectorConfig(**{name: value}), name) == value
    step = 1 if isinstance(low, int) else 1e-3
    for value in (low - step, high + step):
        with pytest.raises(ConfigError, match=name):
            DetectorConfig(**{name: value})
