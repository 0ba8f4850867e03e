"""Stop signals as ``ros2 launch`` sends them on Ctrl-C: the terminal's SIGINT, then
launch's own 0 to 200 ms later, at a random moment (idle, mid-frame after a command,
mid-model-load). The node must exit 0 every time, with no traceback."""

from __future__ import annotations

import os
import random
import signal
import time

import numpy as np
import pytest
from ros_harness import SLOW_MODEL, NodeProcess, Probe

from clip_perception.testing.scenes import make_scene

pytestmark = [pytest.mark.ros, pytest.mark.slow]
T0 = 1_700_000_000 * 10**9


def wait_for_log(node: NodeProcess, text: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in node.log() or not node.alive():
            return text in node.log()
        time.sleep(0.05)
    return False


def interrupt_twice(node: NodeProcess, rng: random.Random) -> float:
    """SIGINT, then a second one 0 to 200 ms later; returns the gap."""
    gap = rng.uniform(0.0, 0.2)
    node.proc.send_signal(signal.SIGINT)
    time.sleep(gap)
    if node.alive():
        node.proc.send_signal(signal.SIGINT)
    return gap


def assert_clean_exit(node: NodeProcess, moment: str, gap: float, seed: int) -> None:
    code = node.wait(40)
    log = node.log()
    where = f"{moment}, second SIGINT {gap * 1000:.0f} ms after the first (seed {seed})"
    assert code == 0, f"exit code {code} ({where}):\n{log}"
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, f"{where}:\n{log}"


def test_two_sigints_at_random_moments_exit_0_without_a_traceback(ros_domain, tmp_path):
    seed = int(os.environ.get("CLIP_PERCEPTION_SIGNAL_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    slow = {"SLOW_ENCODER_DELAY": "0.8"}
    # three nodes at once, each in a namespace of its own (one probe, for the busy one)
    busy = NodeProcess(ros_domain, tmp_path / "busy.log",
                       {"model": SLOW_MODEL, "refine": False}, env=slow)
    idle = NodeProcess(ros_domain, tmp_path / "idle.log", {"model": SLOW_MODEL},
                       env=slow, remaps={"__ns": "/idle"})
    loading = NodeProcess(ros_domain, tmp_path / "loading.log", {"model": SLOW_MODEL},
                          env={**slow, "SLOW_ENCODER_LOAD": "2"}, remaps={"__ns": "/loading"})
    probe = Probe(ros_domain)
    try:
        assert wait_for_log(loading, "loading model", 60), loading.log()
        time.sleep(rng.uniform(0.0, 1.5))  # somewhere inside the 2 s load
        load_gap = interrupt_twice(loading, rng)

        assert probe.wait_for_node(60), busy.log()
        assert probe.command("find the red block", expect_targets="red block")
        image = make_scene(np.random.default_rng(1), target_colour="red").image
        for i in range(int(rng.uniform(2, 5))):  # frames keep the 0.8 s worker busy
            probe.image(image, T0 + i)
            probe.spin(0.2)
        assert probe.spin_until(lambda: probe.received["detected"], 20), busy.log()
        probe.image(image, T0 + 100)
        probe.spin(rng.uniform(0.05, 0.5))  # inside that frame's 0.8 s
        busy_gap = interrupt_twice(busy, rng)

        assert wait_for_log(idle, "active:", 60), idle.log()
        idle_gap = interrupt_twice(idle, rng)

        assert_clean_exit(loading, "mid-load", load_gap, seed)
        assert_clean_exit(busy, "mid-frame after a command", busy_gap, seed)
        assert_clean_exit(idle, "idle", idle_gap, seed)
    finally:
        probe.close()
        for node in (busy, idle, loading):
            node.stop()
