"""``colcon test`` on a ROS install collects every test that ``make test`` collects.

On a ROS install, launch_testing's pytest plugin imports each test module during
collection, so a module that skips itself at import time (its optional
dependency missing) ends the collection of the whole directory: "no tests
collected", exit code 5. Here the suite is collected twice, as ``make test`` does
and the way ``colcon test`` does (launch_testing's plugin where it is installed,
else :mod:`launch_testing_standin`) with the optional Triton pieces missing, and
both counts must agree.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from optional import has_module

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

HIDE_TRITON = '''
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "tritonclient":
            raise ImportError(f"{name} hidden: an install without tritonclient")
sys.meta_path.insert(0, Hide())
'''


def start_collecting(tmp_path: Path, like_colcon: bool) -> subprocess.Popen:
    """``pytest --collect-only`` of the suite, started."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    args = [sys.executable]
    if like_colcon:
        # no tritonclient, no .venv-triton: the optional pieces a ROS machine may lack
        (tmp_path / "sitecustomize.py").write_text(HIDE_TRITON)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO / "test"),
                                             env.get("PYTHONPATH", "")])
        env["CLIP_PERCEPTION_TRITON_PYTHON"] = str(tmp_path / "no-triton-venv" / "python")
    args += ["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "test"]
    if like_colcon and not has_module("launch_testing"):
        args += ["-p", "launch_testing_standin"]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def collected(proc: subprocess.Popen) -> tuple[int, str]:
    """(tests collected, output) of a run from :func:`start_collecting`."""
    out, _ = proc.communicate(timeout=300)
    found = re.search(r"(\d+) tests? collected", out)
    return (int(found.group(1)) if found else 0), out


def test_colcon_test_collects_what_make_test_collects(tmp_path) -> None:
    runs = [start_collecting(tmp_path / name, like_colcon=name == "colcon")
            for name in ("plain", "colcon")]  # both at once: each imports the whole suite
    (plain, plain_out), (colcon, colcon_out) = (collected(p) for p in runs)
    assert plain > 100, plain_out[-2000:]
    if has_module("launch_testing"):
        # the real plugin turns test_launch.py into one launch test: compare without it
        plain -= plain_out.count("test/test_launch.py::")
        colcon -= colcon_out.count("test/test_launch.py")
    assert colcon == plain, colcon_out[-3000:]
