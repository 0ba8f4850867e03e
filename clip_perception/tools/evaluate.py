"""Measure presence and localization quality: ``python -m clip_perception.evaluate``.

Runs the detector over generated scenes with ground truth (or a labelled
bag) and reports, for the single best window of a one-pass grid and for the
refined region on the same scenes:

* presence accuracy and AUROC (score of scenes with vs without the target);
* pointing accuracy: the centre of the region falls inside the true box;
* the share of scenes with IoU >= 0.5 (of those that contain the target);
* crops per frame;
* the same per object-size bucket (square root of the target's visible area).

Where a scene holds two instances of the target, the region may be on either:
pointing and IoU count against the instance it overlaps most.

``--encoder NAME`` picks a member of the known-answer encoder family
(:mod:`clip_perception.testing.known_answer`); ``--all-encoders`` prints one
row per member, with the issue-7 goals checked on each.

With ``--rgbd`` it runs generated RGB-D scenes (or an RGB-D labelled bag)
instead and reports the 3D position error of found targets against the truth,
per depth encoding: the share within the goal (<= 2 cm or <= 2% of the
distance, whichever is larger), median and 95th percentile error.

With ``--sequences`` it runs the tracking benchmark of
:mod:`clip_perception.tools.sequence_eval` instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core.detect.config import BOX_METHODS, ConfigError, DetectorConfig
from ..core.detect.detector import Detector
from ..core.detect.hybrid import supports_dense
from ..core.detect.windows import box_iou
from ..core.model.loading import load_encoder
from ..testing import known_answer
from ..testing.scenes import Scene, hard_scene_set, scene_set, size_bucket

COLOR_ENCODER = "clip_perception.testing.color_encoder:factory"
GOALS = {"presence_accuracy": 0.98, "pointing": 0.95, "iou50": 0.90}
SMALL = "30-60"  # the small-object bucket and its own IoU >= 0.5 goal
SMALL_GOAL = 0.75
MAX_CROPS = 86


@dataclass
class Bucket:
    """Counts of one object-size bucket (scenes that contain the target)."""

    scenes: int = 0
    found: int = 0
    pointed: int = 0
    iou50: int = 0

    def line(self, name: str) -> str:
        n = max(self.scenes, 1)
        return (f"  size {name:<8} scenes={self.scenes:<4} found={self.found / n:.3f} "
                f"pointing={self.pointed / n:.3f} iou50={self.iou50 / n:.3f}")


@dataclass
class Report:
    """Metrics of one pipeline variant over a scene set."""

    name: str
    scenes: int
    presence_accuracy: float
    auroc: float
    pointing: float
    iou50: float
    mean_iou: float
    crops_per_frame: float
    seconds_per_frame: float
    present_scores: list[float] = field(default_factory=list, repr=False)
    absent_scores: list[float] = field(default_factory=list, repr=False)
    buckets: dict[str, Bucket] = field(default_factory=dict, repr=False)

    def meets_goals(self) -> bool:
        """Presence, pointing, IoU >= 0.5 shares (overall and on 30-60 px objects) and
        crops per frame."""
        small = self.buckets.get(SMALL)
        return (all(getattr(self, k) >= v for k, v in GOALS.items())
                and self.crops_per_frame <= MAX_CROPS
                and (small is None or small.iou50 >= SMALL_GOAL * small.scenes))

    def bucket_lines(self) -> list[str]:
        return [b.line(name) for name, b in sorted(self.buckets.items(), key=_bucket_order)]

    def line(self) -> str:
        return (
            f"{self.name:<12} scenes={self.scenes} presence_acc={self.presence_accuracy:.3f} "
            f"auroc={self.auroc:.3f} pointing={self.pointing:.3f} iou50={self.iou50:.3f} "
            f"mean_iou={self.mean_iou:.3f} crops/frame={self.crops_per_frame:.1f} "
            f"s/frame={self.seconds_per_frame:.3f}"
        )


def _bucket_order(item) -> float:
    name = item[0]
    return float(name.lstrip(">=").split("-")[0])


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def _inside(point: tuple[float, float], box: Sequence[int]) -> bool:
    return box[0] <= point[0] < box[2] and box[1] <= point[1] < box[3]


def _match(box: Sequence[int], truths: Sequence[Sequence[int]]) -> tuple[float, int]:
    """The best IoU of ``box`` with any true instance, and that instance's index."""
    ious = [box_iou(box, t) for t in truths]
    best = int(np.argmax(ious))
    return float(ious[best]), best


def evaluate(detector: Detector, scenes: Iterable[Scene], name: str,
             use_best_window: bool = False) -> Report:
    """Run ``detector`` on every scene and score its answers against the truth."""
    correct, pos_scores, neg_scores, hits, ious, crops, count = 0, [], [], [], [], [], 0
    buckets: dict[str, Bucket] = {}
    start = time.perf_counter()
    for scene in scenes:
        count += 1
        result = detector.detect(scene.image, targets=[scene.target])
        found = result.targets[0]
        crops.append(result.crops)
        truths = scene.target_boxes or ([scene.target_box] if scene.target_box else [])
        truth = bool(truths)
        correct += int(found.present == truth)
        (pos_scores if truth else neg_scores).append(found.score)
        if truth:
            box = found.best_window if use_best_window else found.box
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            iou, which = _match(box, truths)
            inside = any(_inside(centre, t) for t in truths)
            hits.append(inside)
            ious.append(iou)
            bucket = buckets.setdefault(size_bucket(truths[which]), Bucket())
            bucket.scenes += 1
            bucket.found += int(found.present)
            bucket.pointed += int(inside)
            bucket.iou50 += int(iou >= 0.5)
    elapsed = time.perf_counter() - start
    ious_arr = np.asarray(ious)
    return Report(
        name=name,
        scenes=count,
        presence_accuracy=correct / max(count, 1),
        auroc=auroc(pos_scores, neg_scores),
        pointing=float(np.mean(hits)) if hits else float("nan"),
        iou50=float(np.mean(ious_arr >= 0.5)) if len(ious_arr) else float("nan"),
        mean_iou=float(ious_arr.mean()) if len(ious_arr) else float("nan"),
        crops_per_frame=float(np.mean(crops)) if crops else 0.0,
        seconds_per_frame=elapsed / max(count, 1),
        present_scores=pos_scores,
        absent_scores=neg_scores,
        buckets=buckets,
    )


def best_threshold(present: Sequence[float], absent: Sequence[float]) -> tuple[float, float]:
    """The presence threshold with the highest accuracy on these scores, and that accuracy.

    Candidates are midpoints between neighbouring scores; among equally good
    ones, the one nearest 0.5 wins (the widest margin on both sides usually).
    """
    scores = np.unique(np.concatenate([np.asarray(present, float), np.asarray(absent, float)]))
    candidates = np.concatenate([[0.5], (scores[:-1] + scores[1:]) / 2])
    pos, neg = np.asarray(present, float), np.asarray(absent, float)
    total = max(len(pos) + len(neg), 1)
    accuracy = np.array([((pos >= t).sum() + (neg < t).sum()) / total for t in candidates])
    best = np.flatnonzero(accuracy == accuracy.max())
    pick = best[np.argmin(np.abs(candidates[best] - 0.5))]
    return float(candidates[pick]), float(accuracy[pick])


def compare(encoder, scenes: list[Scene], config: DetectorConfig,
            mode: str = "crops") -> list[Report]:
    """The single best window of the one-pass default grid vs the refined region
    (crop mode); with ``mode="hybrid"`` also hybrid mode on the same scenes."""
    single = config.single_pass().with_changes(mode="crops")
    reports = [
        evaluate(Detector(encoder, single), scenes, "best_window", use_best_window=True),
        evaluate(Detector(encoder, config.with_changes(mode="crops")), scenes, "refined"),
    ]
    if mode == "hybrid":
        reports.append(evaluate(Detector(encoder, config.with_changes(mode="hybrid")), scenes,
                                "hybrid"))
    return reports


def encoder_row(name: str, report: Report) -> str:
    """One ``--all-encoders`` row: the goals' figures, IoU >= 0.5 per size bucket."""
    sizes = " ".join(f"iou50[{k}]={b.iou50 / max(b.scenes, 1):.2f}/{b.scenes}"
                     for k, b in sorted(report.buckets.items(), key=_bucket_order))
    return (f"{name:<16} presence_acc={report.presence_accuracy:.3f} "
            f"pointing={report.pointing:.3f} iou50={report.iou50:.3f} "
            f"mean_iou={report.mean_iou:.3f} crops/frame={report.crops_per_frame:.1f} {sizes} "
            f"goals={'met' if report.meets_goals() else 'MISSED'}")


def make_scenes(kind: str, count: int, seed: int, width: int, height: int,
                sizes: tuple[int, int] | None = None) -> list[Scene]:
    """``hard`` (30 px to half the frame, cut, textured, same-colour distractors, twins;
    object sides in ``sizes`` when given) or ``blocks`` (the earlier 60-140 px flat
    blocks)."""
    if kind == "blocks":
        return scene_set(count, seed=seed, width=width, height=height)
    return hard_scene_set(count, seed=seed, width=width, height=height, size_range=sizes)


@dataclass
class Report3D:
    """3D position error of found targets over RGB-D scenes."""

    name: str
    scenes: int
    found: int
    located: int
    within_goal: float
    median_mm: float
    p95_mm: float

    def line(self) -> str:
        return (f"{self.name:<12} scenes={self.scenes} found={self.found} "
                f"located={self.located} within_goal={self.within_goal:.3f} "
                f"median_error_mm={self.median_mm:.1f} p95_error_mm={self.p95_mm:.1f}")


def evaluate_3d(detector: Detector, scenes, name: str, encoding: str | None = None,
                depth_range: tuple[float, float] = (0.1, 10.0)) -> Report3D:
    """3D error over RGB-D scenes; ``encoding`` round-trips depth through 16UC1/32FC1."""
    from ..core.spatial.depth import decode_depth, encode_depth
    from ..core.spatial.locate3d import Position3D, locate_targets

    found = located = ok = 0
    errors = []
    scenes = list(scenes)
    for s in scenes:
        if s.truth is None:
            continue
        detection = detector.detect(s.image, targets=[s.target], with_heatmap=True)
        if not detection.targets[0].present:
            continue
        found += 1
        depth = s.depth
        if encoding is not None:
            data, step = encode_depth(depth, encoding)
            depth = decode_depth(encoding, depth.shape[0], depth.shape[1], step, data)
        loc = locate_targets(detection, depth, s.camera, depth_range)[0]
        if not isinstance(loc, Position3D):
            continue
        located += 1
        error = float(np.linalg.norm(loc.point - s.truth))
        errors.append(error)
        ok += error <= max(0.02, 0.02 * float(np.linalg.norm(s.truth)))
    e = np.asarray(errors) * 1000.0
    return Report3D(name, len(scenes), found, located, ok / max(found, 1),
                    float(np.median(e)) if len(e) else float("nan"),
                    float(np.percentile(e, 95)) if len(e) else float("nan"))


def rgbd_scene_set(count: int, seed: int, width: int, height: int):
    """Generated RGB-D scenes like :func:`scene_set`'s: random colours, 0-3 distractors."""
    from ..testing.color_encoder import PALETTE
    from ..testing.rgbd_scenes import make_rgbd_scene

    rng = np.random.default_rng(seed)
    return [make_rgbd_scene(rng, width, height, target_colour=str(rng.choice(list(PALETTE))),
                            distractors=int(rng.integers(0, 4))) for _ in range(count)]


def with_dense_cell(encoder, cell: int | None):
    """A known-answer ``encoder`` with ``cell``-pixel dense cells (None: as loaded)."""
    if cell is not None:
        encoder.patch = int(cell)
    return encoder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_perception.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="encoder: CLIP name, checkpoint path or module:factory "
                             "(default: the known-answer colour encoder)")
    parser.add_argument("--encoder", choices=known_answer.family(),
                        help="a member of the known-answer encoder family")
    parser.add_argument("--all-encoders", action="store_true",
                        help="one row per member of the known-answer encoder family")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--scenes", type=int, default=200, help="generated scenes (default 200)")
    parser.add_argument("--scene-set", choices=("hard", "blocks"), default="hard",
                        help="hard: 30 px to half the frame, objects cut by the border, "
                             "textures, same-colour distractors, two instances (default); "
                             "blocks: 60-140 px flat blocks")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--object-sizes", default=None, metavar="LOW-HIGH",
                        help="hard scenes: object sides from LOW to HIGH px (e.g. 30-60 for "
                             "the small-object bucket alone)")
    parser.add_argument("--size", default="640x480", help="frame size WxH")
    parser.add_argument("--threshold", type=float, default=None, help="presence threshold")
    parser.add_argument("--box-method", choices=BOX_METHODS, default=None,
                        help="how finer windows become the region (default: the config's)")
    parser.add_argument("--bag", help="a labelled bag (see clip_perception.tools.labelled_bag) "
                                      "instead of generated scenes")
    parser.add_argument("--image-topic", help="the bag's image topic (default: its only one)")
    parser.add_argument("--window-stride", type=float, default=None, metavar="F",
                        help="coarse window step as a fraction of the window side "
                             "(window_stride; default 1.0)")
    parser.add_argument("--mode", choices=("crops", "hybrid"), default="crops",
                        help="hybrid: also evaluate hybrid mode beside crop mode "
                             "(the encoder needs encode_dense)")
    parser.add_argument("--dense-cell", type=int, default=None, metavar="PX",
                        help="known-answer encoders: pixels per encode_dense cell (default "
                             "16; ViT-B/32's cells cover about 46 px of a 640x480 frame)")
    parser.add_argument("--no-hybrid-zoom", action="store_true",
                        help="hybrid: no second dense pass for small boxes (hybrid_zoom false)")
    parser.add_argument("--rgbd", action="store_true",
                        help="3D position error on generated RGB-D scenes (or an RGB-D "
                             "labelled bag), in both depth encodings")
    from . import sequence_eval

    sequence_eval.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.sequences:
        return sequence_eval.main_sequences(args)
    if sum(bool(x) for x in (args.model, args.encoder, args.all_encoders)) > 1:
        parser.error("give one of --model, --encoder and --all-encoders")
    if args.dense_cell is not None and (args.model or args.dense_cell < 1):
        parser.error("--dense-cell takes a positive size and the known-answer encoders "
                     "(--encoder or --all-encoders)")

    config = DetectorConfig()
    if args.threshold is not None:
        config = config.with_changes(presence_threshold=args.threshold)
    if args.box_method is not None:
        config = config.with_changes(box_method=args.box_method)
    if args.no_hybrid_zoom:
        config = config.with_changes(hybrid_zoom=False)
    if args.window_stride is not None:
        try:
            config = config.with_changes(window_stride=args.window_stride)
        except ConfigError as exc:
            parser.error(str(exc))
    if args.rgbd:
        model = known_answer.spec(args.encoder) if args.encoder else (args.model or COLOR_ENCODER)
        return _main_rgbd(args, load_encoder(model, args.device, args.precision), config)
    if args.bag:
        from .labelled_bag import read_labelled_bag

        scenes = read_labelled_bag(args.bag, args.image_topic)
        source = f"bag={args.bag}"
    else:
        width, height = (int(v) for v in args.size.lower().split("x"))
        sizes = (tuple(int(v) for v in args.object_sizes.split("-"))
                 if args.object_sizes else None)
        scenes = make_scenes(args.scene_set, args.scenes, args.seed, width, height, sizes)
        source = (f"generated {args.scene_set} seed={args.seed} size={width}x{height}"
                  + (f" object_sizes={args.object_sizes}" if sizes else ""))

    if args.all_encoders:
        print(f"encoders={','.join(known_answer.family())} scenes={len(scenes)} {source} "
              f"threshold={config.presence_threshold} box_method={config.box_method} "
              f"window_stride={config.window_stride}"
              + (f" dense_cell={args.dense_cell}" if args.dense_cell else ""))
        met = True
        for name in known_answer.family():
            encoder = with_dense_cell(load_encoder(known_answer.spec(name), args.device,
                                                   args.precision), args.dense_cell)
            report = evaluate(Detector(encoder, config.with_changes(mode="crops")), scenes, name)
            print(encoder_row(name, report))
            met &= report.meets_goals()
            if args.mode == "hybrid":
                hybrid = evaluate(Detector(encoder, config.with_changes(mode="hybrid")), scenes,
                                  f"{name}/hybrid")
                print(encoder_row(f"{name}/hybrid", hybrid))
        print(f"goals (presence >= {GOALS['presence_accuracy']}, pointing >= {GOALS['pointing']}, "
              f"IoU >= 0.5 on >= {GOALS['iou50']}, on >= {SMALL_GOAL} of {SMALL} px objects, "
              f"crops <= {MAX_CROPS}) on every encoder, "
              f"crop mode: {'met' if met else 'MISSED'}")
        return 0

    model = known_answer.spec(args.encoder) if args.encoder else (args.model or COLOR_ENCODER)
    encoder = with_dense_cell(load_encoder(model, args.device, args.precision), args.dense_cell)
    if args.mode == "hybrid" and not supports_dense(encoder):
        print(f"error: --mode hybrid needs an encoder with encode_dense; {model} has none",
              file=sys.stderr)
        return 2
    print(f"model={model} scenes={len(scenes)} {source} "
          f"threshold={config.presence_threshold} window_stride={config.window_stride}")
    reports = compare(encoder, scenes, config, args.mode)
    for report in reports:
        print(report.line())
    refined = reports[1]
    for report in reports[1:]:
        if len(reports) > 2:  # several modes: say whose buckets follow
            print(f"{report.name} per object size:")
        for line in report.bucket_lines():
            print(line)
    threshold, accuracy = best_threshold(refined.present_scores, refined.absent_scores)
    print(f"presence threshold: accuracy {refined.presence_accuracy:.3f} at "
          f"{config.presence_threshold:g}; best on these scenes {threshold:.3f} "
          f"(accuracy {accuracy:.3f})")
    return 0


def _main_rgbd(args, encoder, config: DetectorConfig) -> int:
    detector = Detector(encoder, config)
    if args.bag:
        from .labelled_bag import read_labelled_rgbd_bag

        scenes = read_labelled_rgbd_bag(args.bag, args.image_topic)
        print(f"model={args.model} rgbd scenes={len(scenes)} bag={args.bag}")
        print(evaluate_3d(detector, scenes, "bag").line())
        return 0
    width, height = (int(v) for v in args.size.lower().split("x"))
    scenes = rgbd_scene_set(args.scenes, args.seed, width, height)
    print(f"model={args.model} rgbd scenes={len(scenes)} generated seed={args.seed} "
          f"size={width}x{height} objects at 0.4-2.0 m, back plane 2.3-3.0 m")
    for encoding in ("16UC1", "32FC1"):
        print(evaluate_3d(detector, scenes, f"rgbd {encoding}", encoding).line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
