"""Package pipeline vs tutorial pipeline latency: ``python -m clip_perception.tools.benchmark``.

Both pipelines score the same generated 640x480 frames, the same windows
(the whole frame plus scales 0.5 and 0.25 at stride 0.5: 86 windows) with
the same encoder at the same precision. The naive one crops each window as
a PIL image, runs CLIP's own ``preprocess`` and encodes it alone
(:mod:`clip_perception.tools.naive`); the package's is :class:`Detector` with
``refine=False``. Also timed, interleaved frame by frame: the model alone on
the same crops, as the encoder runs them (chunks of up to 32 on the CPU,
where that is faster than one batch) and as one batch, and the default
refined detector.

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
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from ..core.detect.config import DetectorConfig
from ..core.detect.crops import FrameUploader, crop_windows
from ..core.detect.detector import Detector
from ..core.detect.results import Detection
from ..core.encoder import ModelLoadError
from ..core.io.image_formats import Frame
from ..core.model.clip_encoder import ClipEncoder, load_clip, resolve_device, resolve_precision
from ..core.model.clip_internals import checkpoint_file, default_download_root
from ..testing.random_clip import ARCHITECTURES, random_clip
from ..testing.scenes import scene_set
from .naive import Agreement, clip_preprocess, naive_scores

T = TypeVar("T")

DEFAULT_FRAMES = {"cpu": 5, "cuda": 50}
SINGLE_PASS = DetectorConfig().single_pass()  # the classic grid the naive loop scores


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m clip_perception.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=None,
                   help="timed frames (default: 5 on the CPU, 50 on CUDA)")
    p.add_argument("--size", default="640x480", help="frame size WxH (default 640x480)")
    p.add_argument("--model", default="ViT-B/32", help="CLIP name or checkpoint path")
    p.add_argument("--precision", default="auto", help="auto, fp32, fp16 or bf16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes and random weights")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the image tower (CUDA graphs on CUDA)")
    p.add_argument("--mode", choices=("crops", "hybrid"), default="crops",
                   help="hybrid: also time hybrid mode (one dense pass + verification crops); "
                        "the last line then gives hybrid's ratios and its speedup over the "
                        "default crop mode (with --ros: the node's mode)")
    p.add_argument("--ros", action="store_true",
                   help="benchmark the ROS node instead (clip_perception.tools.ros_benchmark)")
    p.add_argument("--rate", type=float, default=30.0,
                   help="with --ros: frames published per second (default 30)")
    p.add_argument("--duration", type=float, default=20.0,
                   help="with --ros: seconds of publishing (default 20)")
    p.add_argument("--cameras", type=int, default=None, metavar="N",
                   help="with --ros: N cameras in one node against N single-camera nodes "
                        "(memory and per-camera result rate)")
    p.add_argument("--soak", type=float, default=None, metavar="MINUTES",
                   help="with --ros: soak the node for MINUTES (lifecycle cycles, commands, "
                        "parameter changes) and report RSS, threads and fds over time")
    p.add_argument("--soak-full-every", type=int, default=2, metavar="N",
                   help="with --soak: every Nth lifecycle cycle also does cleanup/configure "
                        "(default 2)")
    p.add_argument("--triton", action="store_true",
                   help="a local Triton server against in-process "
                        "(clip_perception.tools.triton_benchmark; needs `make triton-setup`)")
    p.add_argument("--outage", type=float, default=10.0,
                   help="with --triton: seconds the server is down in the recovery test")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size {args.size!r} is not WxH, e.g. 640x480")
    if args.width < 32 or args.height < 32:
        p.error(f"--size {args.size} is too small (at least 32x32)")
    if args.frames is not None and args.frames < 1:
        p.error("--frames must be at least 1")
    if args.rate <= 0 or args.duration <= 0:
        p.error("--rate and --duration must be positive")
    return args


def cached_checkpoint(model: str) -> str | None:
    """The file ``clip.load`` would use for a model name, if it is already downloaded."""
    file = checkpoint_file(model)
    path = file and os.path.join(default_download_root(), file)
    return path if path and os.path.isfile(path) else None


def build_encoder(args: argparse.Namespace, device: torch.device) -> tuple[ClipEncoder, str]:
    """Pretrained CLIP when a checkpoint is at hand, else random weights; and a description."""
    arch = args.arch
    if arch is None:
        checkpoint = os.path.expanduser(args.model)
        checkpoint = checkpoint if os.path.isfile(checkpoint) else cached_checkpoint(args.model)
        if checkpoint:
            dtype = resolve_precision(args.precision, device)
            return load_clip(checkpoint, device, dtype), f"{args.model} (weights from {checkpoint})"
        arch = args.model
    if arch not in ARCHITECTURES:
        raise ModelLoadError(f"no checkpoint for '{args.model}' and no random-weight "
                             f"architecture of that name; use ViT-B/32 or a checkpoint path")
    return (random_clip(arch, device, args.precision, args.seed),
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
    crops = crop_windows(encoder.normalize(frame), windows, encoder.input_size)
    return crops.to(encoder.input_dtype)


def precision_name(encoder: ClipEncoder) -> str:
    name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[encoder.dtype]
    return name + (" (autocast; weights stored in bf16)" if encoder.dtype == torch.bfloat16 else "")


def percentiles(seconds: list[float]) -> str:
    p50, p95 = np.percentile(seconds, [50, 95])
    return f"p50={p50:.3f} s p95={p95:.3f} s"


def one_batch(encoder: ClipEncoder, crops: torch.Tensor) -> torch.Tensor:
    """The bare image tower on all crops at once: no chunks, no copies."""
    with torch.inference_mode(), encoder.precision():
        return encoder.model.encode_image(crops)


def hybrid_model(encoder: ClipEncoder, image: np.ndarray, crops: torch.Tensor,
                 dense_passes: int = 1) -> None:
    """The model's share of a hybrid frame: its dense passes (a zoom pass costs what the
    frame's does: the encoder works at its own resolution) and as many crops in one batch."""
    frame = FrameUploader(encoder.device)(Frame.from_rgb(image))
    for _ in range(dense_passes):
        encoder.encode_dense(frame)
    if len(crops):
        encoder.encode_normalized(crops)


@dataclass
class FrameRun:
    """What one frame gave: seconds per pipeline, and the answers to compare."""

    seconds: dict[str, float]
    found: Detection
    refined_crops: int
    hybrid_crops: int
    naive_probs: np.ndarray
    naive_evidence: np.ndarray
    hybrid_passes: int = 0


class Pipelines:
    """Everything timed on one frame, in a fixed order."""

    def __init__(self, encoder: ClipEncoder, width: int, height: int, compiled: bool,
                 mode: str = "crops"):
        self.encoder, self.width, self.height = encoder, width, height
        self.fast = Detector(encoder, SINGLE_PASS)
        self.refined = Detector(encoder, DetectorConfig())
        self.hybrid = (Detector(encoder, DetectorConfig(mode="hybrid")) if mode == "hybrid"
                       else None)
        self.windows = self.fast.windows_for(width, height)
        self.preprocess = clip_preprocess(encoder.input_size)
        # The encoder's own chunks are what the package runs; the bare tower in one
        # batch is timed too where that differs (and is not the compiled tower).
        self.chunked = 0 < encoder.max_batch < len(self.windows)
        self.time_one_batch = self.chunked and not compiled

    def set_targets(self, phrases: Sequence[str]) -> None:
        """Embed every phrase now: timing covers the image path (text is cached)."""
        self.fast.set_targets(phrases)
        self.refined.set_targets(phrases)
        if self.hybrid is not None:
            self.hybrid.set_targets(phrases)

    def measure(self, image: np.ndarray, target: str, naive_windows: np.ndarray) -> FrameRun:
        encoder, device, targets = self.encoder, self.encoder.device, [target]
        classes = self.fast.text.classes(targets)
        crops = model_input(encoder, image, self.windows)
        seconds: dict[str, float] = {}
        seconds["model"], _ = timed(lambda: encoder.encode_normalized(crops), device)
        if self.time_one_batch:
            seconds["one batch"], _ = timed(lambda: one_batch(encoder, crops), device)
        seconds["package"], found = timed(lambda: self.fast.detect(image, targets), device)
        seconds["naive"], (probs, evidence) = timed(
            lambda: naive_scores(encoder, image, naive_windows, classes, 1,
                                 encoder.logit_scale, self.preprocess), device)
        seconds["refined"], refined = timed(lambda: self.refined.detect(image, targets), device)
        hybrid_crops, passes = 0, 0
        if self.hybrid is not None:
            seconds["hybrid"], result = timed(lambda: self.hybrid.detect(image, targets), device)
            hybrid_crops, passes = result.crops, result.dense_passes
            seconds["hybrid model"], _ = timed(
                lambda: hybrid_model(encoder, image, crops[:hybrid_crops], passes), device)
        return FrameRun(seconds, found, refined.crops, hybrid_crops, probs[:, 0],
                        evidence[:, 0], passes)

    def compare(self, agreement: Agreement, run: FrameRun) -> None:
        target = run.found.targets[0]
        agreement.add(self.windows, self.width, self.height, target.window_scores,
                      target.best_window, run.naive_probs, run.naive_evidence)


def report(p: Pipelines, times: dict[str, list[float]], refined_crops: list[int],
           agreement: Agreement, device: torch.device, hybrid_crops: list[int],
           hybrid_passes: Sequence[int] = ()) -> None:
    n, encoder = len(p.windows), p.encoder
    chunks = f"in chunks of <= {encoder.max_batch}" if p.chunked else "in one batch"
    print(f"naive   (PIL crop + CLIP preprocess, one window per call): "
          f"{percentiles(times['naive'])} per frame")
    print(f"package (Detector, refine=False: one upload, one roi_align, encoder {chunks}): "
          f"{percentiles(times['package'])} per frame")
    print(f"model   ({n} crops, image encoder only, {chunks} as the package runs it): "
          f"{percentiles(times['model'])}")
    if p.time_one_batch:
        print(f"model   ({n} crops in one batch, bare image tower): "
              f"{percentiles(times['one batch'])}")
    print(f"refined (DetectorConfig() default: refine=True, crop budget "
          f"{p.refined.config.crop_budget}, {np.mean(refined_crops):.0f} crops used): "
          f"{percentiles(times['refined'])} per frame")
    for line in agreement.lines():
        print(line)
    if p.hybrid is None:
        speedup = np.median(times["naive"]) / np.median(times["package"])
        overhead = np.median(times["package"]) / np.median(times["model"])
        print(f"(ratios of p50 times; overhead against the model run {chunks}, as in the package)")
        print(f"speedup_vs_naive={speedup:.2f} overhead_vs_model={overhead:.2f} "
              f"device={device_name(device)} windows={n}")
        return
    used = float(np.mean(hybrid_crops))
    passes = float(np.mean(hybrid_passes)) if len(hybrid_passes) else 1.0
    print(f"hybrid  (mode=hybrid, verify_crops {p.hybrid.config.verify_crops}: {passes:.1f} "
          f"dense passes + {used:.1f} crops): {percentiles(times['hybrid'])} per frame")
    print(f"model   (hybrid's share: the same dense passes + {used:.0f} crops in one batch): "
          f"{percentiles(times['hybrid model'])}")
    speedup = np.median(times["naive"]) / np.median(times["hybrid"])
    overhead = np.median(times["hybrid"]) / np.median(times["hybrid model"])
    vs_crops = np.median(times["refined"]) / np.median(times["hybrid"])
    print(f"hybrid vs the default crop mode (refined): {vs_crops:.2f}x faster; vs the naive "
          f"{n}-window loop: {speedup:.2f}x (ratios of p50 times in this run)")
    print(f"speedup_vs_naive={speedup:.2f} overhead_vs_model={overhead:.2f} "
          f"device={device_name(device)} windows={used:.1f} mode=hybrid "
          f"speedup_vs_crop_mode={vs_crops:.2f}")


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    encoder, described = build_encoder(args, device)
    if args.compile:
        encoder.compile(cuda_graphs=device.type == "cuda")
    frames = args.frames or DEFAULT_FRAMES.get(device.type, 5)
    warmup = 3 if (device.type == "cuda" or args.compile) else 1
    short = min(args.width, args.height)  # objects 60-140 px at 480, scaled with the frame
    scenes = scene_set(frames + warmup, seed=args.seed, width=args.width, height=args.height,
                       size_range=(max(4, short // 8), max(5, short * 7 // 24)))
    p = Pipelines(encoder, args.width, args.height, args.compile, args.mode)
    p.set_targets(sorted({s.target for s in scenes}))
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"model: {described}")
    print(f"device: {device_name(device)}{threads}; precision {precision_name(encoder)}, "
          "the same for both pipelines")
    print(f"frames: {frames} timed (+{warmup} warm-up) at {args.width}x{args.height}, "
          f"{len(p.windows)} windows (whole frame + scales {SINGLE_PASS.window_scales} "
          f"at stride {SINGLE_PASS.window_stride})", flush=True)

    times: dict[str, list[float]] = {}
    refined_crops: list[int] = []
    hybrid_crops: list[int] = []
    hybrid_passes: list[int] = []
    agreement = Agreement(encoder.logit_scale)
    for i, scene in enumerate(scenes):
        if i < warmup:  # the naive pipeline warms up on two windows: a frame takes seconds
            p.measure(scene.image, scene.target, p.windows[:2])
            continue
        frame = p.measure(scene.image, scene.target, p.windows)
        for name, seconds in frame.seconds.items():
            times.setdefault(name, []).append(seconds)
        refined_crops.append(frame.refined_crops)
        hybrid_crops.append(frame.hybrid_crops)
        hybrid_passes.append(frame.hybrid_passes)
        p.compare(agreement, frame)
        print(f"  frame {i - warmup + 1}/{frames}: " + ", ".join(
            f"{name} {t:.3f} s" for name, t in frame.seconds.items()), file=sys.stderr, flush=True)
    report(p, times, refined_crops, agreement, device, hybrid_crops, hybrid_passes)
    return 0 if agreement.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.triton:
        from .triton_benchmark import run_triton_benchmark

        return run_triton_benchmark(args)
    if args.ros:
        try:
            from .ros_benchmark import run_ros_benchmark
        except ImportError as exc:
            print(f"--ros needs clip_perception.tools.ros_benchmark, which could not be imported: "
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
