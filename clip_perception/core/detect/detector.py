"""The detection pipeline: frame in, presence and region per target out.

One frame upload, one ``roi_align`` over all windows, one batched encoder
pass; optionally a second, finer pass around each target's hit within the
crop budget. No ROS here: the node is a thin shell around :class:`Detector`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..encoder import Encoder, device_of, logit_scale_of
from ..io.image_formats import Frame
from .config import DetectorConfig
from .crops import FrameUploader, encode_windows_of
from .dense_regions import scaled_boxes
from .hybrid import detect_hybrid, supports_dense
from .localization import best_box, heatmap, rank_fit_box, refine_windows
from .results import Box, Detection, TargetResult, second_instance
from .scoring import TextBank, WindowScores, window_scores
from .windows import sliding_indices, whole_frame_mask, window_grid

log = logging.getLogger(__name__)


class FinePass(NamedTuple):
    """One refine stage for one target: its windows, their probabilities and heatmap,
    and the target's cosines (the order the box is fitted to)."""

    probs: np.ndarray
    heat: np.ndarray
    coverage: np.ndarray
    windows: np.ndarray | None = None
    evidence: np.ndarray | None = None
    order: np.ndarray | None = None

CHECK_SCALES = (1.0, 0.85, 0.7)  # the fitted box and centred shrinks: presence's own crops
STAGE_CROPS = 20  # windows per target below which another refine stage costs more than it gives
# rank_fit before the last stage: the box only places the next stage, and weighing
# the top ranks more keeps it on a small object under feature noise
SEARCH_RANK_POWER = 1.75
# a stage's grid reaches at least this fraction of the previous stage's window past
# its anchor (half that stage's step): a tight anchor can still grow to the object
PREVIOUS_REACH = 0.25


def _as_frame(frame: Frame | np.ndarray) -> Frame:
    return frame if isinstance(frame, Frame) else Frame.from_rgb(frame)


class Detector:
    """Scores CLIP windows of each frame against the current targets.

    Thread-safe: targets and settings may change while another thread runs
    :meth:`detect`; a frame in flight finishes with the settings it started with.
    """

    def __init__(self, encoder: Encoder, config: DetectorConfig | None = None):
        self.encoder = encoder
        self.device = device_of(encoder)
        self.logit_scale = logit_scale_of(encoder)
        self.input_size = int(encoder.input_size)
        self._lock = threading.Lock()
        self._targets: tuple[str, ...] = ()
        self._uploader = FrameUploader(self.device)
        self._grid_cache: dict[tuple, np.ndarray] = {}
        self._warned_no_dense = False
        self.configure(config or DetectorConfig())

    # --- settings -------------------------------------------------------------
    def configure(self, config: DetectorConfig) -> None:
        """Apply new settings; text embeddings are dropped only if prompts changed."""
        with self._lock:
            old = getattr(self, "config", None)
            self.config = config
            prompts = (config.prompt_templates, config.background_prompts, config.neutral_prompt)
            if old is None or prompts != (old.prompt_templates, old.background_prompts,
                                          old.neutral_prompt):
                self.text = TextBank(self.encoder, *prompts, device=self.device)
            self._grid_cache.clear()
            if config.mode == "hybrid" and not self.hybrid and not self._warned_no_dense:
                self._warned_no_dense = True
                log.warning("mode 'hybrid' needs an encoder with encode_dense(image); %s has "
                            "none, so crop mode runs", type(self.encoder).__name__)

    @property
    def hybrid(self) -> bool:
        """True when frames run in hybrid mode: asked for, and the encoder has ``encode_dense``."""
        return self.config.mode == "hybrid" and supports_dense(self.encoder)

    @property
    def targets(self) -> tuple[str, ...]:
        return self._targets

    def prepare(self, targets: Sequence[str]) -> None:
        """Embed ``targets`` now (raises what the text encoder raises) without making
        them current, so a later :meth:`set_targets` or :meth:`detect` cannot fail on them."""
        targets = tuple(targets)
        with self._lock:
            text = self.text
        if targets:
            text.phrases(targets)  # outside the lock: detect() goes on meanwhile

    def set_targets(self, targets: Sequence[str]) -> None:
        """Set the phrases to find and embed any new ones now (one text pass, outside
        the lock: frames in flight go on with the old targets meanwhile)."""
        targets = tuple(targets)
        with self._lock:
            text = self.text
        if targets:
            text.phrases(targets)
        with self._lock:
            if self.text is not text and targets:  # settings changed the prompts meanwhile
                self.text.phrases(targets)
            self._targets = targets

    # --- geometry -------------------------------------------------------------
    def windows_for(self, width: int, height: int) -> np.ndarray:
        """The coarse windows for a frame size (cached)."""
        key = (width, height)
        boxes = self._grid_cache.get(key)
        if boxes is None:
            c = self.config
            boxes = window_grid(width, height, c.window_scales, c.window_stride,
                                c.include_full_frame)
            self._grid_cache[key] = boxes
        return boxes

    # --- inference ------------------------------------------------------------
    @torch.inference_mode()
    def _score(self, image: torch.Tensor, boxes: np.ndarray, classes: torch.Tensor,
               n_targets: int) -> WindowScores:
        """One roi_align and one encoder pass over ``boxes``: :class:`WindowScores`."""
        return self._score_many([(image, boxes, classes, n_targets)])[0]

    def _drive(self, steps):
        """Run a scoring generator (:meth:`_steps`, :meth:`_refine_steps`) one request at
        a time; its return value."""
        try:
            request = next(steps)
            while True:
                request = steps.send(self._score(*request))
        except StopIteration as done:
            return done.value

    def _refine_steps(self, image, classes, hits: list[Box], width: int, height: int,
                budget: int, stages: int, alpha: float, cell: int, method: str | None = None,
                context: tuple[np.ndarray, np.ndarray] | None = None):
        """Coarse to fine: each stage places a finer grid around the previous box.

        ``hits`` are the anchor boxes, one per target (the class order of
        ``classes``); ``budget`` the crops this may spend. ``method`` (default:
        the config's ``box_method``) turns a stage's windows into a box:
        ``rank_fit`` (:func:`~.localization.rank_fit_box` over the target's cosines
        in every window of the target so far, plus the ``context`` windows,
        ``(boxes [K, 4], cosines [K, T])``, that overlap the stage's region; ranks
        raised to :data:`SEARCH_RANK_POWER` before the last stage, and each grid
        reaching :data:`PREVIOUS_REACH` of the previous stage's window past its
        anchor) or ``heatmap`` (:func:`~.localization.best_box` with ``alpha``).

        A generator (see :meth:`_steps`): it yields each stage's scoring request
        and returns per target the final box (or None) and its :class:`FinePass`
        per stage; and the crops spent. A stage needs about
        :data:`STAGE_CROPS` windows per target to be worth it, so with many
        targets sharing the budget fewer stages run.
        """
        if method is None:
            method = self.config.box_method
        n = len(hits)
        check = method == "rank_fit" and budget >= n * (STAGE_CROPS + len(CHECK_SCALES))
        budget -= n * len(CHECK_SCALES) if check else 0
        stages = min(stages, max(1, budget // (n * STAGE_CROPS)))
        boxes: list[Box | None] = [None] * n
        anchors = list(hits)
        passes: list[list[FinePass]] = [[] for _ in range(n)]
        spent = 0
        for stage in range(stages):
            per_target = (budget - spent) // (n * (stages - stage))
            if per_target < 4:
                break
            last = stage == stages - 1
            reach = [int(PREVIOUS_REACH * (p[-1].windows[0, 2] - p[-1].windows[0, 0]))
                     if p and method == "rank_fit" else 0 for p in passes]
            grids = [refine_windows(a, width, height, per_target, min_pad=r)
                     for a, r in zip(anchors, reach)]
            sizes = [len(g) for g in grids]
            scored = yield (image, np.concatenate(grids), classes, n)
            spent += sum(sizes)
            split = np.cumsum(sizes)[:-1]
            for t, (part, ev, cos) in enumerate(zip(np.split(scored.probs, split),
                                                    np.split(scored.evidence, split),
                                                    np.split(scored.cosine, split))):
                heat, coverage = heatmap(grids[t], part[:, t], width, height, cell)
                passes[t].append(FinePass(part[:, t], heat, coverage, grids[t], ev[:, t],
                                          cos[:, t]))
                if method == "rank_fit":
                    g = grids[t]
                    region = (int(g[:, 0].min()), int(g[:, 1].min()),
                              int(g[:, 2].max()), int(g[:, 3].max()))
                    seen = [p.windows for p in passes[t]]
                    key = [p.order for p in passes[t]]
                    if context is not None:
                        cw, cs = context
                        near = ((cw[:, 0] < region[2]) & (cw[:, 2] > region[0])
                                & (cw[:, 1] < region[3]) & (cw[:, 3] > region[1]))
                        seen.append(cw[near])
                        key.append(cs[near, t])
                    found, _ = rank_fit_box(np.concatenate(seen), np.concatenate(key), region,
                                            rank_power=1.0 if last else SEARCH_RANK_POWER)
                else:
                    found = best_box(heat, coverage, alpha, cell, width, height)
                if found is not None:
                    boxes[t] = anchors[t] = found
        fitted = [t for t in range(n) if boxes[t] is not None]
        if check and fitted:
            # Presence's own evidence: the fitted box and centred shrinks of it. The
            # refine grid's windows are squares of a few sizes, so for a small or
            # elongated object none may hold mostly the object; a crop of the fitted
            # box does, and a shrink still does when the box came out a little large.
            # The box itself is not changed by these scores.
            k = len(CHECK_SCALES)
            tight = np.concatenate([scaled_boxes(boxes[t], [(s, s) for s in CHECK_SCALES],
                                                 width, height) for t in fitted])
            scored = yield (image, tight, classes, n)
            spent += len(tight)
            for row, t in enumerate(fitted):
                part = slice(row * k, (row + 1) * k)
                none = np.zeros_like(passes[t][-1].coverage)
                passes[t].append(FinePass(scored.probs[part, t], none, none, tight[part],
                                          scored.evidence[part, t], scored.cosine[part, t]))
        return boxes, passes, spent

    def detect(self, frame: Frame | np.ndarray, targets: Sequence[str] | None = None,
               with_heatmap: bool = False) -> Detection:
        """Find ``targets`` (default: the current ones) in ``frame``.

        ``frame`` is a :class:`Frame` or an ``(H, W, 3)`` uint8 RGB array.
        """
        return self._drive(self._steps(frame, targets, with_heatmap))

    def detect_batch(self, frames: Sequence[Frame | np.ndarray],
                     targets: Sequence[str] | None = None,
                     with_heatmap: bool = False,
                     targets_each: Sequence[Sequence[str]] | None = None) -> list[Detection]:
        """:meth:`detect` on several frames at once, one encoder pass per stage.

        The frames advance in lockstep: their coarse windows are cropped on the
        device (one ``roi_align`` per frame), concatenated and encoded in one
        forward pass, then each refine stage likewise. The results equal
        :meth:`detect` per frame up to the encoder's batch arithmetic. Hybrid
        mode runs per frame (it has no crop stages to merge), and a remote
        encoder (``encode_windows``) gets one request per frame and stage.
        ``targets_each`` (one phrase list per frame) gives each frame its own
        targets (several robots' frames on a server) instead of ``targets``.
        """
        with self._lock:
            targets = tuple(targets) if targets is not None else self._targets
        if targets_each is not None:
            if len(targets_each) != len(frames):
                raise ValueError(f"{len(frames)} frames but {len(targets_each)} target lists")
            active = [self._steps(f, tuple(t), with_heatmap)
                      for f, t in zip(frames, targets_each)]
        else:
            active = [self._steps(f, targets, with_heatmap) for f in frames]
        results: list[Detection | None] = [None] * len(active)
        replies: list = [None] * len(active)
        while True:
            requests = {}
            for i, steps in enumerate(active):
                if steps is None:
                    continue
                try:
                    requests[i] = steps.send(replies[i])
                except StopIteration as done:
                    results[i], active[i] = done.value, None
            if not requests:
                return results
            replies = [None] * len(active)
            for i, reply in zip(requests, self._score_many(list(requests.values()))):
                replies[i] = reply

    @torch.inference_mode()
    def _score_many(self, requests: list) -> list[WindowScores]:
        """:class:`WindowScores` for each ``(image, boxes, classes, n)`` request, one
        encoder pass for all of them (a remote encoder: one call each, with the frame)."""
        encode_windows = getattr(self.encoder, "encode_windows", None)
        if encode_windows is not None:  # a remote encoder: ``image`` is the Frame itself
            embeddings = [encode_windows(image, boxes) for image, boxes, _, _ in requests]
        else:
            joint = encode_windows_of(self.encoder, [(image, boxes)
                                                      for image, boxes, _, _ in requests])
            embeddings = joint.split([len(boxes) for _, boxes, _, _ in requests])
        return [window_scores(part, classes, n, self.logit_scale)
                for part, (_, _, classes, n) in zip(embeddings, requests)]

    def _steps(self, frame: Frame | np.ndarray, targets: Sequence[str] | None,
               with_heatmap: bool):
        """The body of :meth:`detect` as a generator: yields each scoring request
        ``(image, boxes, classes, n_targets)``, is sent back :class:`WindowScores`,
        and returns the :class:`Detection`. :meth:`detect` drives one,
        :meth:`detect_batch` several in lockstep."""
        frame = _as_frame(frame)
        with self._lock:
            config = self.config
            targets = tuple(targets) if targets is not None else self._targets
            text = self.text
            windows = self.windows_for(frame.width, frame.height)
        width, height = frame.width, frame.height
        if not targets:
            return Detection([], windows, width, height)
        n = len(targets)
        classes = text.classes(targets)
        # a remote encoder (encode_windows) gets the frame itself and crops where it runs
        image = frame if hasattr(self.encoder, "encode_windows") else self._uploader(frame)
        if config.mode == "hybrid" and supports_dense(self.encoder):
            return detect_hybrid(self.encoder, self.logit_scale, self._score, image, targets,
                                 classes, config, width, height, with_heatmap)
        scored = yield (image, windows, classes, n)
        probs, cosine = scored.probs, scored.cosine
        crops = len(windows)

        full = (np.flatnonzero(whole_frame_mask(windows, width, height))[:1]
                if config.include_full_frame else np.zeros(0, int))
        sliding = sliding_indices(windows, width, height)
        # the anchor: the sliding window with the target's highest cosine (an order
        # statistic, so it does not move under a monotone change of the cosines)
        hits: list[Box] = [
            tuple(int(v) for v in windows[sliding[np.argmax(cosine[sliding, t])]])
            for t in range(n)
        ]
        refined: list[Box | None] = [None] * n
        passes: list[list[FinePass]] = [[] for _ in range(n)]
        if config.refine:
            refined, passes, spent = yield from self._refine_steps(
                image, classes, hits, width, height, config.crop_budget - crops,
                config.refine_stages, config.box_alpha, config.heatmap_stride,
                method=config.box_method, context=(windows, cosine))
            crops += spent

        cell = config.heatmap_stride
        results, heatmaps = [], []
        for t, phrase in enumerate(targets):
            scores = probs[:, t]
            score = max([float(scores.max())] + [float(p.probs.max()) for p in passes[t]])
            box = refined[t] or hits[t]
            second = (second_instance(windows[sliding], scores[sliding], box,
                                      config.presence_threshold, order=scored.margin[sliding, t])
                      if score >= config.presence_threshold else None)
            if with_heatmap:
                heatmaps.append(self._compose_heatmap(windows, scores, passes[t],
                                                      width, height, cell))
            results.append(TargetResult(
                phrase=phrase,
                present=score >= config.presence_threshold,
                score=score,
                frame_score=float(scores[full[0]]) if len(full) else float("nan"),
                box=box,
                best_window=hits[t],
                window_scores=scores,
                second_box=second[0] if second else None,
                second_score=second[1] if second else 0.0,
            ))
        return Detection(results, windows, width, height, crops, heatmaps, cell,
                         refined=any(passes))

    @staticmethod
    def _compose_heatmap(windows, scores, passes, width, height, cell) -> np.ndarray:
        """Coarse heatmap, overwritten by each finer pass where that pass has coverage."""
        heat, _ = heatmap(windows, scores, width, height, cell)
        for fine in passes:
            heat = np.where(fine.coverage > 0, fine.heat, heat)
        return heat
