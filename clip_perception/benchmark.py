"""Latency of the package's pipeline against the tutorial one: ``python -m clip_perception.benchmark``.

Both pipelines score the same generated 640x480 frames, the same windows
(the whole frame plus scales 0.5 and 0.25 at stride 0.5: 86 windows) with
the same encoder at the same precision. The naive one crops each window as
a PIL image, runs CLIP's own ``preprocess`` and encodes it alone
(:mod:`clip_perception.naive`); the package's is :class:`Detector` with
``refine=False``. Also timed, interleaved frame by frame: the model alone
on the same number of crops in one batch, and the default refined detector.

The model is ViT-B/32 with pretrained weights when a checkpoint is at hand
(``--model PATH``, or the named model in ``~/.cache/clip``), else the same
architecture with random weights: the same compute.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch

from .config import DetectorConfig
from .crops import FrameUploader, crop_windows
from .detector import Detector
from .encoders import (ClipEncoder, ModelLoadError, _clip_module, default_download_root,
                       load_clip, resolve_device, resolve_precision)
from .image_formats import Frame
from .naive import best_sliding_window, clip_preprocess, naive_scores
from .scenes import scene_set

T = TypeVar("T")

# clip.model.CLIP arguments for random-weight models; "tiny" is for tests.
ARCHS = {
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=32, context_length=77, vocab_size=49408,
                     transformer_width=512, transformer_heads=8, transformer_layers=12),
    "tiny": dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64,
                 vision_patch_size=16, context_length=77, vocab_size=49408,
                 transformer_width=64, transformer_heads=1, transformer_layers=1),
}
# Agreement tolerances. The pipelines resize differently (PIL bicubic vs
# roi_align's area-averaged bilinear), so scores differ a little; with random
# weights all probabilities sit near 1/classes and the best window can be a
# near-tie that this noise flips.
PROB_TOLERANCE = 0.02  # per square window, absolute target probability
TIE_COSINE = 0.005  # best windows tie if their evidence differs by < this x logit_scale
DEFAULT_FRAMES = {"cpu": 6, "cuda": 50}
SINGLE_PASS = DetectorConfig(refine=False, window_stride=0.5)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m clip_perception.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=None,
                   help="timed frames (default: 6 on the CPU, 50 on CUDA)")
    p.add_argument("--size", default="640x480", help="frame size WxH (default 640x480)")
    p.add_argument("--model", default="ViT-B/32", help="CLIP name or checkpoint path")
    p.add_argument("--precision", default="auto", help="auto, fp32, fp16 or bf16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes and random weights")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the image tower (CUDA graphs on CUDA)")
    p.add_argument("--ros", action="store_true",
                   help="benchmark the ROS node instead (clip_perception.ros_benchmark)")
    p.add_argument("--arch", choices=sorted(ARCHS), default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size {args.size!r} is not WxH, e.g. 640x480")
    if args.width < 32 or args.height < 32:
        p.error(f"--size {args.size} is too small (at least 32x32)")
    if args.frames is not None and args.frames < 1:
        p.error("--frames must be at least 1")
    return args


def cached_checkpoint(model: str) -> str | None:
    """The file ``clip.load`` would use for a model name, if it is already downloaded."""
    url = _clip_module().clip._MODELS.get(model)
    path = url and os.path.join(default_download_root(), os.path.basename(url))
    return path if path and os.path.isfile(path) else None


def build_encoder(args: argparse.Namespace, device: torch.device,
                  dtype: torch.dtype) -> tuple[ClipEncoder, str]:
    """Pretrained CLIP when a checkpoint is at hand, else random weights; and a description."""
    arch = args.arch
    if arch is None:
        checkpoint = os.path.expanduser(args.model)
        checkpoint = checkpoint if os.path.isfile(checkpoint) else cached_checkpoint(args.model)
        if checkpoint:
            return load_clip(checkpoint, device, dtype), f"{args.model} pretrained ({checkpoint})"
        arch = args.model
    if arch not in ARCHS:
        raise ModelLoadError(f"no checkpoint for '{args.model}' and no random-weight "
                             f"architecture of that name; use ViT-B/32 or a checkpoint path")
    torch.manual_seed(args.seed)
    net = _clip_module().model.CLIP(**ARCHS[arch])
    return (ClipEncoder(net.to(device), device, dtype),
            f"{arch} with random weights (no checkpoint here; same compute)")


def device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} {torch.cuda.get_device_name(index)}"


def timed(fn: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """Wall time of ``fn()`` with the device's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def model_input(encoder: ClipEncoder, image: np.ndarray, windows: np.ndarray) -> torch.Tensor:
    """The crops the package feeds the model: normalised, in the model's dtype, on its device."""
    frame = FrameUploader(encoder.device)(Frame.from_rgb(image))
    return crop_windows(encoder.normalize(frame), windows, encoder.input_size).to(encoder.dtype)


def precision_name(encoder: ClipEncoder) -> str:
    name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[encoder.dtype]
    return name + (" (autocast, bf16 weights)" if encoder.dtype == torch.bfloat16 else "")


class Agreement:
    """Per-frame comparison of the naive and package window scores."""

    def __init__(self, logit_scale: float):
        self.tie = TIE_COSINE * logit_scale
        self.frames = self.same = self.tied = 0
        self.max_dp = 0.0
        self.full_dp: list[float] = []

    def add(self, windows: np.ndarray, width: int, height: int, package_probs: np.ndarray,
            package_best: tuple[int, ...], naive_probs: np.ndarray,
            naive_evidence: np.ndarray) -> None:
        dp = np.abs(package_probs - naive_probs)
        square = (windows[:, 2] - windows[:, 0]) == (windows[:, 3] - windows[:, 1])
        self.max_dp = max(self.max_dp, float(dp[square].max()))
        self.full_dp += dp[~square].tolist()
        naive_best = best_sliding_window(windows, naive_evidence, width, height)
        package_index = next(i for i, w in enumerate(windows) if tuple(w) == package_best)
        gap = naive_evidence[naive_best] - naive_evidence[package_index]
        self.frames += 1
        self.same += int(naive_best == package_index)
        self.tied += int(naive_best != package_index and gap <= self.tie)

    @property
    def passed(self) -> bool:
        return self.max_dp <= PROB_TOLERANCE and self.same + self.tied == self.frames

    def lines(self) -> list[str]:
        lines = [
            f"agreement: {'PASS' if self.passed else 'FAIL'}",
            f"  best window: same in {self.same}/{self.frames} frames, a tie in {self.tied} "
            f"(naive evidence gap <= {self.tie:.3f} = {TIE_COSINE} cosine x logit_scale)",
            f"  target probability, square windows: max |diff| = {self.max_dp:.4f} "
            f"(tolerance {PROB_TOLERANCE})",
        ]
        if self.full_dp:
            lines.append(
                f"  non-square windows (the whole frame): max |diff| = {max(self.full_dp):.4f}, "
                "not held to the tolerance: CLIP's preprocess centre-crops them, "
                "the package squashes the whole window")
        return lines


def percentiles(seconds: list[float]) -> str:
    p50, p95 = np.percentile(seconds, [50, 95])
    return f"p50={p50:.3f} s p95={p95:.3f} s"


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    encoder, described = build_encoder(args, device, resolve_precision(args.precision, device))
    if args.compile:
        encoder.compile(cuda_graphs=device.type == "cuda")
    frames = args.frames or DEFAULT_FRAMES.get(device.type, 6)
    warmup = 3 if (device.type == "cuda" or args.compile) else 1
    short = min(args.width, args.height)  # objects 60-140 px at 480, scaled with the frame
    scenes = scene_set(frames + warmup, seed=args.seed, width=args.width, height=args.height,
                       size_range=(max(4, short // 8), max(5, short * 7 // 24)))
    fast, refined = Detector(encoder, SINGLE_PASS), Detector(encoder, DetectorConfig())
    windows = fast.windows_for(args.width, args.height)
    phrases = sorted({s.target for s in scenes})
    fast.set_targets(phrases)  # text embeddings are cached: timing is the image path
    refined.set_targets(phrases)
    preprocess = clip_preprocess(encoder.input_size)
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"model: {described}")
    print(f"device: {device_name(device)}{threads}; precision {precision_name(encoder)}, "
          "the same for both pipelines")
    print(f"frames: {frames} timed (+{warmup} warm-up) at {args.width}x{args.height}, "
          f"{len(windows)} windows (whole frame + scales {SINGLE_PASS.window_scales} "
          f"at stride {SINGLE_PASS.window_stride})", flush=True)

    times: dict[str, list[float]] = {"naive": [], "package": [], "model": [], "refined": []}
    refined_crops: list[int] = []
    agreement = Agreement(encoder.logit_scale)
    for i, scene in enumerate(scenes):
        image, targets = scene.image, [scene.target]
        classes = fast.text.classes(targets)
        crops = model_input(encoder, image, windows)
        timing_run = i >= warmup
        naive_windows = windows if timing_run else windows[:2]
        t_model, _ = timed(lambda: encoder.encode_normalized(crops), device)
        t_package, found = timed(lambda: fast.detect(image, targets), device)
        t_naive, (probs, evidence) = timed(
            lambda: naive_scores(encoder, image, naive_windows, classes, 1,
                                 encoder.logit_scale, preprocess), device)
        t_refined, refined_found = timed(lambda: refined.detect(image, targets), device)
        if not timing_run:
            continue
        for name, t in (("naive", t_naive), ("package", t_package), ("model", t_model),
                        ("refined", t_refined)):
            times[name].append(t)
        refined_crops.append(refined_found.crops)
        target = found.targets[0]
        agreement.add(windows, args.width, args.height, target.window_scores, target.best_window,
                      probs[:, 0], evidence[:, 0])
        print(f"  frame {i - warmup + 1}/{frames}: naive {t_naive:.3f} s, package "
              f"{t_package:.3f} s, model {t_model:.3f} s, refined {t_refined:.3f} s",
              file=sys.stderr, flush=True)

    n = len(windows)
    print(f"naive   (PIL crop + CLIP preprocess, one window per call): "
          f"{percentiles(times['naive'])} per frame")
    print(f"package (Detector, refine=False: one upload, one roi_align, one batch): "
          f"{percentiles(times['package'])} per frame")
    print(f"model   ({n} crops in one batch, image encoder only): "
          f"{percentiles(times['model'])}")
    print(f"refined (DetectorConfig() default: refine=True, crop budget "
          f"{refined.config.crop_budget}, {np.mean(refined_crops):.0f} crops used): "
          f"{percentiles(times['refined'])} per frame")
    for line in agreement.lines():
        print(line)
    speedup = np.median(times["naive"]) / np.median(times["package"])
    overhead = np.median(times["package"]) / np.median(times["model"])
    print("(ratios of p50 times)")
    print(f"speedup_vs_naive={speedup:.2f} overhead_vs_model={overhead:.2f} "
          f"device={device_name(device)} windows={n}")
    return 0 if agreement.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ros:
        try:
            from .ros_benchmark import run_ros_benchmark
        except ImportError as exc:
            print(f"--ros needs clip_perception.ros_benchmark, which could not be imported: "
                  f"{exc}", file=sys.stderr)
            return 2
        return run_ros_benchmark(args)
    try:
        return run(args)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
