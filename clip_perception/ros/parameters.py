"""The node's parameters: names, defaults, descriptions and ranges, in one table."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..core.detect.config import (
    BOX_METHODS,
    DEFAULT_BACKGROUNDS,
    DEFAULT_NEUTRAL,
    DEFAULT_TEMPLATES,
    RANGES,
    DetectorConfig,
)
from ..core.track.hysteresis import HysteresisConfig
from ..core.track.tracker import TrackConfig
from ..core.track.tracking_stage import TrackingConfig


@dataclass(frozen=True)
class Param:
    """One declared parameter; ``read_only`` ones are fixed once the node starts."""

    name: str
    default: object
    description: str
    read_only: bool = False
    bounds: tuple[float, float] | None = None


_D = DetectorConfig()
PARAMS: tuple[Param, ...] = (
    Param("cameras", [""], "camera names; each named camera c has its inputs and outputs "
          "under c/ (c/image, c/detected, ...) and all share one model; [''] is one unnamed "
          "camera on image, detected, ...", read_only=True),
    Param("model", "ViT-B/32", "CLIP model name (ViT-B/32, ViT-B/16, RN50, ...), path of a "
          "local checkpoint, or module:factory of your own encoder", read_only=True),
    Param("model_download_root", "", "where named models are cached ('' = ~/.cache/clip)",
          read_only=True),
    Param("device", "auto", "auto | cpu | cuda | cuda:N", read_only=True),
    Param("precision", "auto", "auto (fp16 on CUDA, bf16 on CPUs with native bf16, else "
          "fp32) | fp32 | fp16 | bf16", read_only=True),
    Param("target", "", "what to look for; a phrase or a command such as 'pick up the hammer'"),
    Param("max_command_length", 500, "longest command accepted, in characters",
          bounds=(1, 10000)),
    Param("prompt_templates", list(DEFAULT_TEMPLATES), "prompt ensemble; {} is the phrase"),
    Param("background_prompts", list(DEFAULT_BACKGROUNDS),
          "scene words every target competes against in the softmax"),
    Param("neutral_prompt", DEFAULT_NEUTRAL, "generic class that absorbs windows matching "
          "no prompt well"),
    Param("presence_threshold", _D.presence_threshold, "target probability at which an "
          "object counts as present", bounds=RANGES["presence_threshold"]),
    Param("window_scales", list(_D.window_scales), "window sides as fractions of the frame's "
          "short side"),
    Param("window_stride", _D.window_stride, "step between windows as a fraction of the "
          "window side", bounds=RANGES["window_stride"]),
    Param("include_full_frame", _D.include_full_frame, "also score the whole frame"),
    Param("refine", _D.refine, "finer passes of windows around the best hit"),
    Param("refine_stages", _D.refine_stages, "number of finer passes",
          bounds=RANGES["refine_stages"]),
    Param("crop_budget", _D.crop_budget, "most crops encoded per frame, all passes together",
          bounds=RANGES["crop_budget"]),
    Param("heatmap_stride", _D.heatmap_stride, "pixels per heatmap cell",
          bounds=RANGES["heatmap_stride"]),
    Param("box_method", _D.box_method, "how finer windows become the region: "
          f"{' | '.join(BOX_METHODS)}"),
    Param("box_alpha", _D.box_alpha, "probability a heatmap cell must exceed to join the "
          "region (box_method heatmap only)", bounds=RANGES["box_alpha"]),
    Param("mode", _D.mode, "crops (sliding windows, coarse to fine) | hybrid (one dense pass "
          "proposes, verify_crops crops decide; needs an encoder with encode_dense)"),
    Param("verify_crops", _D.verify_crops, "hybrid mode: most crops encoded per frame",
          bounds=RANGES["verify_crops"]),
    Param("hybrid_zoom", _D.hybrid_zoom, "hybrid mode: refit a box that spans fewer than 4 "
          "dense cells on a second dense pass over the region around it"),
    Param("publish_debug_image", True, "publish debug_image while someone subscribes"),
    Param("publish_heatmap", True, "publish heatmap while someone subscribes"),
    Param("image_reliability", "best_effort", "image subscription QoS: best_effort (works "
          "with every publisher) or reliable", read_only=True),
    Param("image_qos_depth", 1, "image subscription queue depth", read_only=True,
          bounds=(1, 100)),
    Param("image_transport", "raw", "colour input: raw subscribes image (sensor_msgs/Image), "
          "compressed subscribes image/compressed (sensor_msgs/CompressedImage, jpeg or png)",
          read_only=True),
    Param("use_depth", False, "also subscribe depth (16UC1 mm or 32FC1 m, registered to "
          "colour) and camera_info, and publish target_pose, markers and detections_3d",
          read_only=True),
    Param("depth_sync_tolerance", 0.05, "largest stamp difference, seconds, between a colour "
          "frame and the depth frame paired with it", read_only=True, bounds=(0.0, 1.0)),
    Param("depth_range", [0.1, 10.0], "[min, max] metres; depth outside it is invalid"),
    Param("track_memory", 10.0, "seconds a target's track is remembered while the object "
          "is hidden or out of view; back within it, it keeps its track_id",
          bounds=(0.0, 3600.0)),
    Param("stable_k", 2, "stable turns true after stable_k of the last stable_n inferences "
          "found the target", bounds=(1, 100)),
    Param("stable_n", 3, "the window of inferences for stable_k", bounds=(1, 100)),
    Param("stable_m", 3, "stable turns false after stable_m inferences in a row missed the "
          "target", bounds=(1, 100)),
    Param("propagate", False, "between inferences, carry each track's box to every newer "
          "frame by optical flow and publish it with source 'propagated'"),
    Param("diagnostics_period", 1.0, "seconds between /diagnostics messages", read_only=True,
          bounds=(0.1, 60.0)),
    Param("no_frames_timeout", 5.0, "seconds without a colour frame, while active, after "
          "which /diagnostics says WARN 'no frames for N s' (0: never)", read_only=True,
          bounds=(0.0, 3600.0)),
    Param("autostart", True, "configure and activate at start; false waits for a "
          "lifecycle manager", read_only=True),
)
DETECTOR_FIELDS = (
    "prompt_templates", "background_prompts", "neutral_prompt", "presence_threshold",
    "window_scales", "window_stride", "include_full_frame", "refine", "refine_stages",
    "crop_budget", "heatmap_stride", "box_alpha", "box_method", "mode", "verify_crops",
    "hybrid_zoom",
)


TRACKING_FIELDS = ("track_memory", "stable_k", "stable_n", "stable_m", "propagate",
                   "depth_range")


def tracking_config(values: dict) -> TrackingConfig:
    """A validated TrackingConfig from parameter values (raises ValueError)."""
    hysteresis = HysteresisConfig(int(values["stable_k"]), int(values["stable_n"]),
                                  int(values["stable_m"]))
    return TrackingConfig(TrackConfig(float(values["track_memory"]), hysteresis),
                          bool(values["propagate"]), depth_range(values))


def depth_range(values: dict) -> tuple[float, float]:
    """The validated ``depth_range`` (raises ValueError)."""
    value = [float(v) for v in values["depth_range"]]
    if len(value) != 2 or not 0.0 <= value[0] < value[1]:
        raise ValueError(f"depth_range {value} must be [min, max] metres with 0 <= min < max")
    return value[0], value[1]


_NAME_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def camera_names(values: dict) -> tuple[str, ...]:
    """The validated ``cameras`` (raises ValueError): ROS name tokens, no duplicates;
    an empty name only as the single default ``[""]``."""
    names = tuple(str(n) for n in values["cameras"])
    if names == ("",):
        return names
    if not names:
        raise ValueError("cameras is empty; use [''] for one unnamed camera")
    for name in names:
        if not _NAME_TOKEN.fullmatch(name):
            raise ValueError(f"camera name {name!r} is not a ROS name token (a letter, then "
                             "letters, digits or _); an empty name only as the single "
                             "default ['']")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"camera names repeat: {', '.join(duplicates)}")
    return names


def descriptor(param: Param) -> ParameterDescriptor:
    """A ParameterDescriptor carrying the description, read-only flag and range."""
    desc = ParameterDescriptor(description=param.description, read_only=param.read_only)
    if param.bounds is not None:
        low, high = param.bounds
        if isinstance(param.default, int):
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(low),
                                                            to_value=float(high), step=0.0)]
    return desc


def detector_config(values: dict) -> DetectorConfig:
    """A validated DetectorConfig from parameter values (raises ConfigError)."""
    kwargs = {name: values[name] for name in DETECTOR_FIELDS}
    for name in ("prompt_templates", "background_prompts", "window_scales"):
        kwargs[name] = tuple(kwargs[name])
    return DetectorConfig(**kwargs)
