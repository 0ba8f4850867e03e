"""clip_perception.core is plain Python: every module imports with ROS made unimportable.

A fresh interpreter gets a meta-path finder that refuses rclpy, every *_msgs /
*_interfaces package, launch, launch_ros, ament_index_python and the other ROS
Python packages, then imports each module of ``clip_perception.core``. A core
module that imports ROS, even indirectly, fails here.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import clip_perception.core

REPO = Path(__file__).resolve().parents[1]

BLOCKER = r'''
import importlib.abc, json, sys

BLOCKED_ROOTS = {"rclpy", "rcl_interfaces", "rosidl_runtime_py", "rosidl_parser", "rpyutils",
                 "launch", "launch_ros", "launch_testing", "ament_index_python",
                 "builtin_interfaces", "message_filters", "cv_bridge", "diagnostic_updater",
                 "rosbag2_py", "tf2_ros", "tf2_py", "image_transport"}


def blocked(name):
    root = name.partition(".")[0]
    return root in BLOCKED_ROOTS or root.endswith(("_msgs", "_interfaces"))


class RosBlocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if blocked(name):
            raise ImportError(f"{name} is blocked: clip_perception.core must not import ROS")
        return None


sys.meta_path.insert(0, RosBlocker())
try:  # the blocker works
    import rclpy  # noqa: F401
    raise SystemExit("rclpy imported despite the blocker")
except ImportError:
    pass

results = {}
for module in json.loads(sys.argv[1]):
    try:
        __import__(module)
        results[module] = "ok"
    except Exception as exc:  # noqa: BLE001 - report every failure, not the first
        results[module] = f"{type(exc).__name__}: {exc}"
leaked = sorted(name for name in sys.modules if blocked(name))
print(json.dumps({"results": results, "leaked": leaked}))
'''


def core_modules() -> list[str]:
    """Every module of clip_perception.core, from the package directory."""
    path = clip_perception.core.__path__
    return ["clip_perception.core"] + sorted(
        info.name for info in pkgutil.walk_packages(path, prefix="clip_perception.core."))


def run_blocked(modules: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", BLOCKER, json.dumps(modules)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


NODE = "clip_perception.ros.node"  # imports rclpy: the check must catch it


@pytest.fixture(scope="module")
def outcome() -> dict:
    """One interpreter: every core module first, then the node (a control)."""
    return run_blocked([*core_modules(), NODE])


def test_core_has_the_expected_modules() -> None:
    modules = core_modules()
    for name in ("encoder", "detect.config", "detect.detector", "model.loading",
                 "detect.windows", "runtime.camera_slots", "runtime.log_throttle",
                 "remote.triton_encoder", "spatial.locate3d", "io.command"):
        assert f"clip_perception.core.{name}" in modules


@pytest.mark.slow
@pytest.mark.slow
def test_every_core_module_imports_without_ros(outcome: dict) -> None:
    core = {m: r for m, r in outcome["results"].items() if m != NODE}
    assert set(core) == set(core_modules())
    failed = {m: r for m, r in core.items() if r != "ok"}
    assert not failed, failed


@pytest.mark.slow
def test_the_blocker_catches_a_module_that_imports_ros(outcome: dict) -> None:
    """The check can fail: the ROS node itself does not import under the blocker."""
    assert outcome["results"][NODE].startswith("ImportError"), outcome
    assert outcome["leaked"] == []  # nothing got past the blocker, the node included
