"""Lifecycle and parameter storms on one node process, over real DDS, while frames
flow: 50 random lifecycle transitions (cleanups during a model load that keeps
failing, deactivates during a frame), then 200 random parameter changes, valid and
invalid. What a supervisor sees must stay true: the state the node reports, its
threads and file descriptors, /diagnostics, and answers to commands.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import pytest
from ros_harness import NodeProcess, Probe

from clip_perception.testing.scenes import make_scene

pytestmark = [pytest.mark.ros]
T0 = 1_700_000_000 * 10**9
NODE = "/clip_perception"


class Supervisor:
    """Lifecycle and parameter service clients on the probe's node."""

    def __init__(self, probe: Probe):
        from lifecycle_msgs.srv import ChangeState, GetState
        from rcl_interfaces.srv import SetParameters

        self.probe = probe
        node = probe.node
        self.change = node.create_client(ChangeState, f"{NODE}/change_state")
        self.get = node.create_client(GetState, f"{NODE}/get_state")
        self.set = node.create_client(SetParameters, f"{NODE}/set_parameters")
        self._ChangeState, self._GetState, self._SetParameters = ChangeState, GetState, \
            SetParameters
        for client in (self.change, self.get, self.set):
            assert probe.spin_until(client.service_is_ready, 30), client.srv_name

    def _call(self, client, request, timeout: float = 30.0):
        future = client.call_async(request)
        assert self.probe.spin_until(future.done, timeout), f"{client.srv_name} timed out"
        return future.result()

    def state(self) -> str:
        return self._call(self.get, self._GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        request = self._ChangeState.Request()
        request.transition.id = transition_id
        return self._call(self.change, request).success

    def set_param(self, name: str, value):
        from rclpy.parameter import Parameter

        request = self._SetParameters.Request(parameters=[Parameter(name, value=value)
                                                          .to_parameter_msg()])
        return self._call(self.set, request).results[0]


def threads_and_fds(pid: int) -> tuple[int, int]:
    return (len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd")))


@pytest.fixture(scope="module")
def storm_node(module_ros_domain, tmp_path_factory):
    """A node whose model 'server' is down while ``gate`` exists; each frame takes 0.1 s."""
    tmp = tmp_path_factory.mktemp("fault_lifecycle")
    gate = tmp / "server_down"
    node = NodeProcess(module_ros_domain, tmp / "node.log",
                       {"model": "faulty_encoder:factory", "diagnostics_period": 0.3,
                        "refine": False},
                       env={"FAULTY_GATE": str(gate), "FAULTY_IMAGE_DELAY": "0.1"})
    probe = Probe(module_ros_domain)
    try:
        assert probe.wait_for_node(60), node.log()
        yield node, probe, Supervisor(probe), gate
    finally:
        probe.close()
        node.stop()


def diagnostics(probe: Probe, since: float) -> list[tuple[int, str]]:
    out = []
    for t, msg in probe.received["/diagnostics"]:
        if t >= since and msg.status:
            level = msg.status[0].level
            out.append((level[0] if isinstance(level, bytes) else int(level),
                        msg.status[0].message))
    return out


def answers(probe: Probe, image, stamp: int, timeout: float = 15.0) -> bool:
    """Publish ``image`` until the node answers it (a debug image with its stamp)."""
    from ros_harness import stamp_of

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        probe.image(image, stamp)
        if probe.spin_until(lambda: any(stamp_of(m) == stamp for _, m in
                                        probe.received["debug_image"]), 0.3):
            return True
    return False


def test_a_lifecycle_storm_ends_in_the_right_state_with_flat_threads_and_true_health(
        storm_node):
    from lifecycle_msgs.msg import Transition

    node, probe, sup, gate = storm_node
    seed = int(os.environ.get("CLIP_PERCEPTION_STORM_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    image = make_scene(np.random.default_rng(3), target_colour="red", present=True).image
    assert probe.command("find the red block", expect_targets="red block")
    assert answers(probe, image, T0), node.log()
    baseline = threads_and_fds(node.proc.pid)

    Path(gate).touch()  # the model server goes down: each configure now keeps retrying
    moves = {"active": [Transition.TRANSITION_DEACTIVATE],
             "inactive": [Transition.TRANSITION_ACTIVATE, Transition.TRANSITION_CLEANUP],
             "unconfigured": [Transition.TRANSITION_CONFIGURE]}
    after = {Transition.TRANSITION_DEACTIVATE: "inactive",
             Transition.TRANSITION_ACTIVATE: "active",
             Transition.TRANSITION_CLEANUP: "unconfigured",
             Transition.TRANSITION_CONFIGURE: "inactive"}
    state = sup.state()
    stamp = T0 + 1
    for step in range(50):
        if step == 35:
            gate.unlink()  # the server is back: loads now succeed (and cleanups cancel them)
        stamp += 1
        probe.image(image, stamp)  # a frame in flight (0.1 s) at a random point
        probe.spin(rng.uniform(0.0, 0.08))
        transition = rng.choice(moves[state])
        assert sup.transition(transition), f"step {step} (seed {seed}):\n{node.log()[-3000:]}"
        state = after[transition]
        assert node.alive(), f"step {step} (seed {seed}):\n{node.log()[-3000:]}"
    assert sup.state() == state, f"seed {seed}"

    # Bring it up: the supervisor's view must be true from here on.
    path = {"unconfigured": [Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE],
            "inactive": [Transition.TRANSITION_ACTIVATE], "active": []}[state]
    for transition in path:
        assert sup.transition(transition), f"seed {seed}"
    assert sup.state() == "active"
    assert probe.command("find the red block")
    assert answers(probe, image, stamp + 1000), f"seed {seed}:\n{node.log()[-3000:]}"
    since = time.monotonic()
    assert probe.spin_until(lambda: (d := diagnostics(probe, since)) and d[-1][0] == 0, 10), \
        f"health not OK while results flow (seed {seed}): {diagnostics(probe, since)[-3:]}"
    assert "red block" in diagnostics(probe, since)[-1][1]
    threads, fds = threads_and_fds(node.proc.pid)
    assert threads <= baseline[0] + 2 and fds <= baseline[1] + 4, \
        f"threads/fds grew from {baseline} to {(threads, fds)} (seed {seed})"


def test_a_parameter_storm_refuses_bad_values_with_a_reason_and_keeps_answering(storm_node):
    node, probe, sup, gate = storm_node
    if gate.exists():
        gate.unlink()
    seed = int(os.environ.get("CLIP_PERCEPTION_STORM_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    good = [
        lambda: ("presence_threshold", round(rng.uniform(0.05, 0.95), 3)),
        lambda: ("window_stride", round(rng.uniform(0.1, 0.9), 3)),
        lambda: ("crop_budget", rng.randint(20, 200)),
        lambda: ("refine", rng.random() < 0.5),
        lambda: ("mode", rng.choice(["crops", "hybrid"])),
        lambda: ("depth_range", [0.2, rng.uniform(1.0, 8.0)]),
        lambda: ("target", rng.choice(["find the red block", "pick up the blue block",
                                       "look for the green block"])),
    ]
    bad = [
        lambda: ("presence_threshold", rng.choice([-0.5, 1.5])),
        lambda: ("window_stride", 0.0),
        lambda: ("crop_budget", "many"),
        lambda: ("mode", "sideways"),
        lambda: ("depth_range", [5.0, 0.5]),
        lambda: ("target", "pick up"),
        lambda: ("model", "ViT-L/14"),
        lambda: ("box_method", "guess"),
    ]
    image = make_scene(np.random.default_rng(3), target_colour="red", present=True).image
    stamp = T0 + 10**6
    started = time.monotonic()
    for step in range(200):
        is_good = rng.random() < 0.6
        name, value = rng.choice(good if is_good else bad)()
        result = sup.set_param(name, value)
        where = f"step {step} {name}={value!r} (seed {seed})"
        assert result.successful is is_good, f"{where}: {result.reason}"
        if not is_good:
            assert result.reason.strip(), f"{where}: refused without a reason"
        if step % 10 == 0:
            stamp += 1
            probe.image(image, stamp)
        probe.spin(0.005)
    assert node.alive(), node.log()[-3000:]
    # (each change re-versions the targets, so results of frames in flight are dropped,
    # not published: answers are checked after the storm; /diagnostics during it)
    times = [t for t, _ in probe.received["/diagnostics"] if t >= started]
    gaps = np.diff([started, *times, time.monotonic()])
    assert gaps.max() <= 3.0, f"/diagnostics stopped for {gaps.max():.1f} s in the storm"
    assert sup.set_param("target", "find the red block").successful
    assert sup.set_param("presence_threshold", 0.5).successful
    assert sup.set_param("mode", "crops").successful
    assert probe.spin_until(lambda: probe.targets() == "red block", 10)
    assert answers(probe, image, stamp + 1000), node.log()[-3000:]
