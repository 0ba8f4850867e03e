"""Shared test setup. DDS stays on loopback: every ROS process the tests start
gets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and its own ROS_DOMAIN_ID."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ros_harness, slow_encoder

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)
os.environ.setdefault("ROS_DOMAIN_ID", "42")
# Frames the tests publish are larger than Fast DDS's default shared-memory segment.
from clip_perception.ros.dds_profile import env_with_profile  # noqa: E402

os.environ.update(env_with_profile(os.environ))

# Domains for node tests: a block per pytest process so parallel runs do not meet.
# Offsets 0-4 are fixed ones for files that cannot take the fixture
# (test_fastdds_profile: 0-1, test_launch's unittest classes: 2-4); the
# ros_domain fixture hands out the rest (about 50 per block; Fast DDS ids end at 232).
DOMAIN_BLOCK = 56
_DOMAIN_BASE = int(os.environ.get("CLIP_PERCEPTION_TEST_DOMAIN_BASE",
                                  str(4 + (os.getpid() % 4) * DOMAIN_BLOCK)))
os.environ["CLIP_PERCEPTION_TEST_DOMAIN_BASE"] = str(_DOMAIN_BASE)  # the files read it
_domains = itertools.count(_DOMAIN_BASE + 5)


def _next_domain() -> int:
    domain = next(_domains)
    if domain == int(os.environ.get("ROS_DOMAIN_ID", "42")):  # the Makefile's, for make demo
        domain = next(_domains)
    assert domain <= 232, "Fast DDS domain ids end at 232"
    return domain


@pytest.fixture
def ros_domain() -> int:
    """A ROS_DOMAIN_ID of this test's own."""
    return _next_domain()


@pytest.fixture(scope="module")
def module_ros_domain() -> int:
    """A ROS_DOMAIN_ID for a test module sharing one node process across its tests."""
    return _next_domain()


@pytest.fixture
def start(ros_domain, tmp_path):
    """start(params, env, remaps, namespace) -> (node process, probe); both torn down after.

    For the node tests over DDS (test_node.py, test_node_findings.py).
    """
    from ros_harness import NodeProcess, Probe  # here: only DDS tests need the harness

    started: list[tuple[NodeProcess, Probe]] = []

    def _start(params=None, env=None, wait=True, remaps=None, namespace="/"):
        node = NodeProcess(ros_domain, tmp_path / f"node{len(started)}.log", params, env=env,
                           remaps=remaps)
        probe = Probe(ros_domain, namespace)
        started.append((node, probe))
        if wait:
            assert probe.wait_for_node(40), f"node never subscribed:\n{node.log()}"
        return node, probe

    yield _start
    for node, probe in started:
        probe.close()
        node.stop()
