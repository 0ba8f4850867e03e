"""Tracks over real DDS, as a planner sees them: one RGB-D node with the slow known-answer
encoder (so frames arrive while it is busy), ``propagate`` on and the default hysteresis.

A generated sequence (:mod:`clip_perception.testing.sequences`: an arm hides the block
for 2 s) is published at its camera rate; the test reads ``result``, ``detected`` and
``target_pose`` and checks identity, steady presence, propagation and filtering.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from ros_harness import SLOW_MODEL, NodeProcess, Probe, stamp_of

from clip_perception.core.detect.windows import box_iou
from clip_perception.core.io.compressed import encode_compressed
from clip_perception.core.io.result_json import parse_result
from clip_perception.testing.sequences import make_sequence

pytestmark = [pytest.mark.ros, pytest.mark.slow]

T0 = 1_700_000_000 * 10**9
DEFAULTS = {"stable_k": 2, "stable_n": 3, "stable_m": 3, "track_memory": 10.0}


def test_identity_steady_presence_propagation_and_filtered_pose_over_dds(ros_domain, tmp_path):
    node = NodeProcess(ros_domain, tmp_path / "node.log",
                       {"image_transport": "compressed", "use_depth": True, "model": SLOW_MODEL,
                        "propagate": True, **DEFAULTS},
                       env={"SLOW_ENCODER_DELAY": "0.05"})
    probe = Probe(ros_domain)
    log = ""
    try:
        probe.enable_rgbd()
        assert probe.wait_for_rgbd_node(40), f"node never subscribed:\n{node.log()}"
        seq = make_sequence("occluded", seed=11, colour="red", hidden=2.0, fps=10.0)
        assert probe.command(f"find the {seq.phrase}", expect_targets=seq.phrase)
        frames = list(seq.frames())
        visible = [f for f in frames if f.t < 2.4]
        hidden = [f for f in frames if f.truth["a"] is None]
        truth: dict[int, tuple | None] = {}
        stamp = T0

        def results() -> list:
            return [parse_result(m.data) for _, m in probe.received["result"]]

        def play(phase, done, timeout=40.0) -> None:
            """Publish ``phase``'s frames in a loop at 10 Hz until ``done(inference)``."""
            nonlocal stamp
            end = time.monotonic() + timeout
            for f in itertools.cycle(phase):
                stamp += 100_000_000
                truth[stamp] = f.truth["a"]
                probe.camera_info(seq.camera, stamp)
                probe.depth(f.depth, stamp)
                probe.compressed(encode_compressed(f.image, "jpeg", 90), stamp)
                probe.spin(0.1)
                mine = [d for d in results() if d.source == "inference"
                        and (truth.get(d.stamp_ns, 0) is None) == (phase is hidden)]
                if done(mine) or time.monotonic() > end:
                    return

        play(visible, lambda mine: sum(d.targets[0].steady for d in mine) >= 3)
        play(hidden, lambda mine: sum(not d.targets[0].present for d in mine) >= 4)
        play(visible, lambda mine: sum(d.targets[0].steady for d in mine) >= 6)
        probe.spin(1.0)  # then the last result's messages, all of them
        probe.spin_until(lambda: len(probe.received["detected"]) == len(
            probe.received["result"]), 5.0)
        docs = results()
        detected = [m.data for _, m in probe.received["detected"]]
        log = node.log()
    finally:
        probe.close()
        node.stop()

    inference = [d for d in docs if d.source == "inference"]
    propagated = [d for d in docs if d.source == "propagated"]
    assert len(inference) >= 10, (len(inference), log)
    assert all(d.revision == 2 for d in docs)
    entries = [d.targets[0] for d in inference]
    # identity: one track id for the block, before and after the arm hid it
    ids = {e.track_id for e in entries if e.present}
    assert len(ids) == 1, ids
    hidden = [i for i, d in enumerate(inference) if truth[d.stamp_ns] is None]
    assert hidden and any(entries[i].present for i in range(hidden[-1] + 1, len(entries)))
    # steady presence: on after 2 of 3, kept through the first miss, off after 3 misses
    stable = [e.steady for e in entries]
    assert stable[0] is False and True in stable[:3], stable
    first_miss = next(i for i, e in enumerate(entries) if not e.present)
    assert stable[first_miss] is True, "one missed inference does not end stable"
    misses = [i for i in range(first_miss, len(entries)) if not entries[i].present]
    if len(misses) >= 3:
        assert stable[misses[2]] is False, stable
    # detected follows stable, result by result (propagated ones repeat the last inference)
    assert detected == [bool(d.targets[0].steady) for d in docs]
    # propagation: newer frames between inferences, same decisions, boxes on the block
    assert propagated, "no propagated result although frames arrived while busy"
    last = None
    for k, d in enumerate(docs):
        if d.source == "inference":
            last = d.targets[0]
            continue
        e = d.targets[0]
        # a frame the worker also took is answered by inference afterwards, never before
        assert all(x.stamp_ns != d.stamp_ns for x in docs[:k] if x.source == "inference")
        assert (e.present, e.steady, e.track_id) == (last.present, last.steady, last.track_id)
        if e.present and truth[d.stamp_ns] is not None:
            assert box_iou(e.box, truth[d.stamp_ns]) >= 0.5, (e.box, truth[d.stamp_ns])
    # the pose is the filtered one: the track's covariance, tighter than one frame's
    tracked = [e for e in entries if e.steady and e.track and e.track.position is not None
               and e.present and e.covariance is not None]
    assert len(tracked) >= 3
    later = tracked[-1]
    assert np.trace(np.reshape(later.track.covariance, (3, 3))) < \
        np.trace(np.reshape(later.covariance, (3, 3)))
    poses = {stamp_of(m): m for _, m in probe.received["target_pose"]}
    stamp = next(d.stamp_ns for d in inference if d.targets[0] is later)
    p = poses[stamp].pose
    assert np.allclose([p.pose.position.x, p.pose.position.y, p.pose.position.z],
                       later.track.position, atol=1e-6)
    assert np.allclose(np.reshape(p.covariance, (6, 6))[:3, :3],
                       np.reshape(later.track.covariance, (3, 3)), rtol=1e-4, atol=1e-12)
