"""The sequence benchmark: ``python -m clip_perception.evaluate --sequences``.

Generated RGB-D sequences (:mod:`clip_perception.testing.sequences`) are fed
in stamp order at their camera rate, in real time, into the node's own path:
an :class:`~clip_perception.core.runtime.inference_loop.InferenceLoop` with
the :class:`~clip_perception.core.detect.detector.Detector` and the
:class:`~clip_perception.core.track.tracking_stage.TrackingStage`. The
detector is held to at least ``--inference-period`` s per frame (the known-
answer encoders are far faster than CLIP on a CPU), so the loop drops frames
while busy exactly as the node does at CLIP's rate. Each published result
becomes the ``result`` document the node would publish, and the figures come
from those documents and the per-frame truth:

* ID switches: changes of the track id found on one true instance (a region
  on an instance: IoU >= 0.3 or its centre inside the instance's box);
* re-identification: leave-and-return sequences whose object has its old id
  after coming back;
* presence flicker: changes of ``stable`` per minute after it first turned true
  (static scene);
* box-centre jitter: standard deviation of the track box's centre (px, the
  larger axis) once stable (static scene);
* 3D jitter: standard deviation of the filtered position (mm, the largest
  axis) once stable (static scene, object at 1 m);
* latency: inferences of frames that show the object, up to the first
  ``stable`` true;
* the achieved inference interval (the loop's real cadence on this machine);
* with ``--propagate``: the centre error (px) of propagated boxes against
  the truth of their frame, next to that of the last inference's box held
  until the next one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..core.detect.detector import Detector
from ..core.detect.windows import box_iou
from ..core.io.image_formats import Frame
from ..core.io.result_json import FrameResult
from ..core.runtime.inference_loop import InferenceLoop, Result
from ..core.spatial.locate3d import RgbdFrame
from ..core.track.hysteresis import HysteresisConfig
from ..core.track.tracker import TrackConfig
from ..core.track.tracking_stage import TrackingConfig, TrackingStage, result_document
from ..testing import known_answer
from ..testing.sequences import Sequence, make_sequence

GOALS = {"id_switches": 0, "reid": 0.95, "flicker_per_min": 0.0, "jitter_px": 2.0,
         "jitter_mm": 3.0, "latency_inferences": 3}
T0_NS = 1_700_000_000 * 10**9
DEFAULT_TRACK = TrackConfig()


class PacedDetector:
    """A detector that takes at least ``period`` s per frame (CLIP's pace on a CPU)."""

    def __init__(self, detector: Detector, period: float):
        self._detector = detector
        self.period = period

    def __getattr__(self, name):
        return getattr(self._detector, name)

    def detect(self, frame, targets=None, with_heatmap=False):
        start = time.perf_counter()
        out = self._detector.detect(frame, targets=targets, with_heatmap=with_heatmap)
        rest = self.period - (time.perf_counter() - start)
        if rest > 0:
            time.sleep(rest)
        return out


@dataclass
class Run:
    """The documents one sequence produced, with the truth of their frames."""

    sequence: Sequence
    docs: list[FrameResult] = field(default_factory=list)
    truth: dict[int, dict] = field(default_factory=dict)     # stamp_ns -> instance -> box
    points: dict[int, dict] = field(default_factory=dict)
    counters: dict = field(default_factory=dict)

    def inference(self) -> list[FrameResult]:
        return sorted((d for d in self.docs if d.source == "inference"), key=lambda d: d.stamp_ns)


def run_sequence(detector, sequence: Sequence, period: float = 0.5, propagate: bool = False,
                 track: TrackConfig = DEFAULT_TRACK, use_depth: bool = True) -> Run:
    """Feed ``sequence`` in real time through the loop and tracking stage; the documents."""
    run = Run(sequence)
    lock = threading.Lock()
    stage = TrackingStage(lambda header: header * 1e-9,
                          TrackingConfig(track=track, propagate=propagate))

    def publish(result: Result) -> None:
        doc = result_document(result.header, "camera", result.detection, result.tracks)
        with lock:
            run.docs.append(doc)

    loop = InferenceLoop(publish, want_heatmap=lambda: use_depth, tracking=stage)
    loop.load(PacedDetector(detector, period))
    loop.set_targets([sequence.phrase])
    loop.start()
    start = time.perf_counter()
    try:
        for f in sequence.frames():
            stamp = T0_NS + int(round(f.t * 1e9))
            run.truth[stamp], run.points[stamp] = f.truth, f.points
            frame = Frame.from_rgb(f.image)
            if use_depth:
                frame = RgbdFrame.wrap(frame, f.depth, sequence.camera)
            wait = start + f.t - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            loop.submit(stamp, frame)
        time.sleep(period * 1.5 + 0.2)
    finally:
        loop.stop()
    run.counters = loop.counters()
    return run


# --- figures -------------------------------------------------------------------------
def _on(box, truth) -> bool:
    if box is None or truth is None:
        return False
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return box_iou(box, truth) >= 0.3 or (truth[0] <= cx < truth[2] and truth[1] <= cy < truth[3])


def instance_ids(run: Run) -> dict[str, list[tuple[int, str]]]:
    """Per true instance, the (stamp, track id) of every inference region found on it."""
    out: dict[str, list[tuple[int, str]]] = {k: [] for k in run.sequence.instances}
    for doc in run.inference():
        truth = run.truth[doc.stamp_ns]
        for entry in doc.targets:
            regions = [(entry.box, entry.track_id)] if entry.present else []
            if entry.present and entry.second_box is not None:
                regions.append((entry.second_box, entry.second_track_id))
            for box, track_id in regions:
                if track_id is None:
                    continue
                hits = [k for k, b in truth.items() if _on(box, b)]
                if len(hits) == 1:
                    out[hits[0]].append((doc.stamp_ns, track_id))
    return out


def id_switches(run: Run) -> int:
    switches = 0
    for seen in instance_ids(run).values():
        ids = [i for _, i in seen]
        switches += sum(a != b for a, b in zip(ids, ids[1:]))
    return switches


def reidentified(run: Run) -> bool | None:
    """Leave-and-return: the id after coming back is the one before leaving (None: the
    object was not found on both sides)."""
    seen = instance_ids(run).get("a", [])
    gone = [s for s, _ in seen]
    truth_gone = [s for s, t in sorted(run.truth.items()) if t.get("a") is None]
    if not truth_gone or not seen:
        return None
    before = [i for s, i in seen if s < truth_gone[0]]
    after = [i for s, i in seen if s > truth_gone[-1]]
    del gone
    if not before or not after:
        return None
    return before[-1] == after[0]


def stable_series(run: Run) -> list[bool]:
    return [bool(d.targets[0].steady) for d in run.inference() if d.targets]


def latency(run: Run) -> int | None:
    """Inferences of frames that show the object, from the first, up to and including the
    first ``stable`` true (None: never). Frames where it is hidden do not count: at a slow
    cadence an arm may hide it from the second inference on."""
    n = 0
    for doc in run.inference():
        if not doc.targets:
            continue
        if any(b is not None for b in run.truth[doc.stamp_ns].values()):
            n += 1
        if doc.targets[0].steady:
            return n
    return None


def inference_interval(run: Run) -> float:
    """Mean seconds between inference results (of the frames' stamps)."""
    stamps = [d.stamp_ns for d in run.inference()]
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1e-9 if len(stamps) > 1 else float("nan")


def flicker_per_minute(run: Run) -> float:
    series = stable_series(run)
    if True not in series:
        return float("inf")
    after = series[series.index(True):]
    changes = sum(a != b for a, b in zip(after, after[1:]))
    return changes * 60.0 / run.sequence.duration


def jitter(run: Run) -> tuple[float, float]:
    """(box-centre px, 3D mm): the larger per-axis standard deviation once stable."""
    centres, points = [], []
    for doc in run.inference():
        t = doc.targets[0] if doc.targets else None
        if t is None or not t.steady or t.track is None:
            continue
        b = t.track.box
        centres.append(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))
        if t.track.position is not None:
            points.append(t.track.position)
    px = float(np.max(np.std(centres, axis=0))) if len(centres) >= 3 else float("nan")
    mm = float(np.max(np.std(points, axis=0)) * 1000) if len(points) >= 3 else float("nan")
    return px, mm


def propagation_errors(run: Run) -> tuple[float, float, int]:
    """Mean centre error (px) of propagated boxes against the truth of their frames, of
    the last inference's box held at the same frames, and how many there were."""
    inference = run.inference()
    prop, held = [], []
    for doc in run.docs:
        if doc.source != "propagated" or not doc.targets or not doc.targets[0].present:
            continue
        truth = run.truth[doc.stamp_ns].get("a")
        last = [d for d in inference if d.stamp_ns < doc.stamp_ns]
        if truth is None or not last or not last[-1].targets[0].present:
            continue
        tc = np.array([(truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2])
        for box, out in ((doc.targets[0].box, prop), (last[-1].targets[0].box, held)):
            out.append(float(np.linalg.norm(np.array([(box[0] + box[2]) / 2,
                                                      (box[1] + box[3]) / 2]) - tc)))
    if not prop:
        return float("nan"), float("nan"), 0
    return float(np.mean(prop)), float(np.mean(held)), len(prop)


# --- the table -----------------------------------------------------------------------
SEQUENCES = (("moving", {}), ("moving", {}), ("occluded", {"hidden": 0.5}),
             ("occluded", {"hidden": 3.0}), ("leave_return", {"away": 2.0}),
             ("leave_return", {"away": 5.0}), ("leave_return", {"away": 8.0}),
             ("crossing", {}), ("static", {}))


@dataclass
class MemberReport:
    name: str
    switches: dict[str, int] = field(default_factory=dict)
    reid: list[bool | None] = field(default_factory=list)
    flicker: float = float("nan")
    jitter_px: float = float("nan")
    jitter_mm: float = float("nan")
    latency: list[int | None] = field(default_factory=list)
    propagation: list[tuple[float, float, int]] = field(default_factory=list)
    intervals: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def goals(self) -> dict[str, bool]:
        reid = [r for r in self.reid if r is not None]
        return {
            "id_switches": all(self.switches.get(k, 0) == 0
                               for k in ("moving", "occluded", "leave_return")),
            "reid": bool(reid) and len(reid) == len(self.reid)
            and sum(reid) / len(reid) >= GOALS["reid"],
            "flicker": self.flicker <= GOALS["flicker_per_min"],
            "jitter_px": self.jitter_px <= GOALS["jitter_px"],
            "jitter_mm": self.jitter_mm <= GOALS["jitter_mm"],
            "latency": bool(self.latency) and all(x is not None and x <= GOALS[
                "latency_inferences"] for x in self.latency),
        }

    def line(self) -> str:
        s = self.switches
        found = [r for r in self.reid if r is not None]
        reid = f"{sum(found)}/{len(self.reid)}"
        lat = max((x for x in self.latency if x is not None), default=None)
        met = self.goals()
        text = (f"{self.name:<16} switches moving={s.get('moving', 0)} "
                f"occluded={s.get('occluded', 0)} leave_return={s.get('leave_return', 0)} "
                f"crossing={s.get('crossing', 0)}  reid={reid}  "
                f"flicker={self.flicker:.1f}/min  jitter={self.jitter_px:.2f}px "
                f"{self.jitter_mm:.2f}mm  latency<={lat} inf  "
                f"interval {np.nanmean(self.intervals):.2f}s")
        if self.propagation:
            p = [x for x in self.propagation if x[2]]
            if p:
                text += (f"  propagated {sum(x[2] for x in p)}: err "
                         f"{np.mean([x[0] for x in p]):.1f}px vs held "
                         f"{np.mean([x[1] for x in p]):.1f}px")
        return text + "  goals " + ("met" if all(met.values()) else
                                     "NOT met: " + ", ".join(k for k, v in met.items() if not v))


def evaluate_member(name: str, seed: int = 0, period: float = 0.5, propagate: bool = False,
                    sequences=SEQUENCES, track: TrackConfig = DEFAULT_TRACK,
                    colour: str | None = None, progress=None) -> MemberReport:
    """Every sequence of ``sequences`` (``(kind, overrides)``) with member ``name``."""
    detector = Detector(known_answer.load(name))
    report = MemberReport(name)
    start = time.perf_counter()
    for i, (kind, overrides) in enumerate(sequences):
        seq = make_sequence(kind, seed=seed + i, colour=colour, **overrides)
        run = run_sequence(detector, seq, period, propagate, track)
        report.switches[kind] = report.switches.get(kind, 0) + id_switches(run)
        report.latency.append(latency(run))
        report.intervals.append(inference_interval(run))
        if kind == "leave_return":
            report.reid.append(reidentified(run))
        if kind == "static":
            report.flicker = flicker_per_minute(run)
            report.jitter_px, report.jitter_mm = jitter(run)
        if propagate and kind == "moving":
            report.propagation.append(propagation_errors(run))
        if progress is not None:
            progress(f"  {name} {kind} {overrides or ''} seed {seed + i}: "
                     f"{len(run.inference())} inferences, switches {id_switches(run)}, "
                     f"latency {latency(run)}")
    report.seconds = time.perf_counter() - start
    return report


def main_sequences(args) -> int:
    """``--sequences``: the table per family member; exit status 1 if a goal is missed."""
    members = [args.encoder] if args.encoder else list(known_answer.family())
    track = TrackConfig(memory=args.track_memory, hysteresis=HysteresisConfig(
        args.stable_k, args.stable_n, args.stable_m))
    print(f"sequence benchmark: {len(SEQUENCES)} sequences per member at 15 Hz, inference "
          f"period >= {args.inference_period:g} s, propagate={args.propagate}, seed "
          f"{args.seed}, stable {args.stable_k} of {args.stable_n} / {args.stable_m} misses")
    ok = True
    for name in members:
        report = evaluate_member(name, args.seed, args.inference_period, args.propagate,
                                 track=track, colour=args.colour,
                                 progress=print if args.verbose else None)
        print(report.line(), flush=True)
        ok &= all(report.goals().values())
    print("goals: " + ", ".join(f"{k} {v}" for k, v in GOALS.items()))
    return 0 if ok else 1


def add_arguments(parser) -> None:
    group = parser.add_argument_group("sequence benchmark (--sequences)")
    group.add_argument("--sequences", action="store_true",
                       help="tracking: ID switches, re-identification, flicker, jitter, latency")
    group.add_argument("--inference-period", type=float, default=0.5,
                       help="least seconds per inference (CLIP on a CPU: 0.3 to 1.5)")
    group.add_argument("--propagate", action="store_true",
                       help="carry boxes to every frame between inferences (optical flow)")
    group.add_argument("--track-memory", type=float, default=TrackConfig().memory)
    group.add_argument("--stable-k", type=int, default=HysteresisConfig().k)
    group.add_argument("--stable-n", type=int, default=HysteresisConfig().n)
    group.add_argument("--stable-m", type=int, default=HysteresisConfig().m)
    group.add_argument("--colour", default=None, help="target colour (default: per seed)")
    group.add_argument("--verbose", action="store_true", help="a line per sequence")

