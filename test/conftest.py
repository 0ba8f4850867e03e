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
# One compute thread per process: make test runs 3 workers and their node processes
# on 2 cores, where torch's default (a thread per core, each spin-waiting) slows the
# CPU-bound family sweeps about twofold. Set it to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Frames the tests publish are larger than Fast DDS's default shared-memory segment.
from clip_perception.ros.dds_profile import env_with_profile  # noqa: E402

os.environ.update(env_with_profile(os.environ))

# Domains for node tests: a block per pytest run so parallel runs do not meet.
# Offsets 0-4 are fixed ones for files that cannot take the fixture
# (test_fastdds_profile: 0-1, test_launch's unittest classes: 2-4); the
# ros_domain fixture hands out the rest, split between pytest-xdist workers and
# reused in turn (a test's processes are gone before its domain comes round
# again). Fast DDS domain ids end at 232.
# CLIP_PERCEPTION_TEST_DOMAIN_BLOCK narrows the block where the domain ids are shared
# with other work (e.g. base 88, block 28: ids 88..115)
DOMAIN_BLOCK = int(os.environ.get("CLIP_PERCEPTION_TEST_DOMAIN_BLOCK", "56"))
FIXED_DOMAINS = 5
_DOMAIN_BASE = int(os.environ.get("CLIP_PERCEPTION_TEST_DOMAIN_BASE",
                                  str(4 + (os.getpid() % 4) * DOMAIN_BLOCK)))
os.environ["CLIP_PERCEPTION_TEST_DOMAIN_BASE"] = str(_DOMAIN_BASE)  # the files read it


def worker_domains(base: int, worker: int, workers: int) -> list[int]:
    """The domain ids the ros_domain fixture of one xdist worker hands out."""
    share = (DOMAIN_BLOCK - FIXED_DOMAINS) // max(1, workers)
    first = base + FIXED_DOMAINS + worker * share
    return [d for d in range(first, first + share) if d <= 232]


_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_domains = itertools.cycle(worker_domains(_DOMAIN_BASE, _WORKER, _WORKERS))


def _next_domain() -> int:
    domain = next(_domains)
    if domain == int(os.environ.get("ROS_DOMAIN_ID", "42")):  # the Makefile's, for make demo
        domain = next(_domains)
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


# Files whose tests mostly wait (a frozen server, a camera that stops for 30 s, node
# start-ups) start first: pytest-xdist hands files out in collection order, and a run
# that met them last would end on one busy worker.
LONG_FILES = ("test_triton_node.py", "test_triton_server.py", "test_node.py",
              "test_fault_inputs.py", "test_node_findings.py")


def pytest_collection_modifyitems(items: list) -> None:
    def rank(item) -> int:
        name = Path(str(item.fspath)).name
        return LONG_FILES.index(name) if name in LONG_FILES else len(LONG_FILES)
    items.sort(key=rank)  # stable: the order within a file and among the rest stays
