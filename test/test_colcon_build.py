"""The package builds with colcon (ament_python) and installs what ROS tools look for.

Builds this repository in a temporary workspace (src/clip_perception is a
symlink to it) with the colcon of the Python running the tests; no network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "clip_perception"


@pytest.fixture(scope="module")
def colcon_available() -> None:
    pytest.importorskip("colcon_core", reason="colcon is not installed (pip install colcon-core "
                        "colcon-ros colcon-python-setup-py; `make setup` does)")
    pytest.importorskip("colcon_ros", reason="colcon-ros is not installed, so colcon cannot "
                        "build ament_python packages (pip install colcon-ros)")


def colcon_build(workspace: Path, *extra: str) -> Path:
    """``colcon build`` of this repository in ``workspace``; returns the install base."""
    src = workspace / "src"
    src.mkdir(parents=True, exist_ok=True)
    if not (src / PACKAGE).exists():
        (src / PACKAGE).symlink_to(REPO, target_is_directory=True)
    install = workspace / "install"
    env = dict(os.environ)
    env["COLCON_HOME"] = str(workspace / "colcon_home")  # no user defaults or mixins
    env.pop("COLCON_DEFAULTS_FILE", None)
    cmd = [sys.executable, "-m", "colcon", "--log-base", str(workspace / "log"), "build",
           "--base-paths", str(src), "--build-base", str(workspace / "build"),
           "--install-base", str(install), "--event-handlers", "console_direct-", *extra]
    result = subprocess.run(cmd, cwd=workspace, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=180)
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout[-4000:]}"
    return install / PACKAGE  # isolated layout: one prefix per package


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(400)  # colcon build's own limit is 180 s; then the checks
@pytest.mark.parametrize("mode", ["copy", "symlink"])
def test_colcon_build_installs_package(colcon_available, tmp_path: Path, mode: str) -> None:
    extra = ("--symlink-install",) if mode == "symlink" else ()
    prefix = colcon_build(tmp_path, *extra)
    share = prefix / "share" / PACKAGE
    expected = [
        prefix / "lib" / PACKAGE / "perception_node",  # where `ros2 run` / launch_ros look
        share / "launch" / "perception.launch.py",
        share / "config" / "perception.yaml",
        share / "config" / "fastdds_large_frames.xml",
        share / "package.xml",
        prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE,
    ]
    missing = [str(p.relative_to(prefix)) for p in expected if not p.exists()]
    assert not missing, f"not installed: {missing}"
    script = prefix / "lib" / PACKAGE / "perception_node"
    assert os.access(script, os.X_OK)
    assert "perception_node" in script.read_text()
    assert not (prefix / "bin" / "perception_node").exists()  # setup.cfg moved it to lib/

    # Sourcing the install's setup script (as users do) puts this install first on
    # PYTHONPATH and AMENT_PREFIX_PATH; the package then finds its installed files.
    code = ("import clip_perception, clip_perception.ros.dds_profile as d; "
            "from ament_index_python.packages import get_package_share_directory as g; "
            "print(clip_perception.__file__); print(d.large_frame_profile_path()); "
            "print(g('clip_perception'))")
    shell = f'. "{prefix.parent}/local_setup.sh" && exec "{sys.executable}" -c "{code}"'
    probe = subprocess.run(
        ["bash", "-c", shell], cwd=tmp_path, text=True, capture_output=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    module_file, profile, share_dir = probe.stdout.split()
    assert Path(share_dir) == share
    if mode == "copy":
        assert Path(module_file).is_relative_to(prefix)
        assert Path(profile) == share / "config" / "fastdds_large_frames.xml"
    else:  # --symlink-install: the module and profile resolve to the source tree
        assert Path(module_file).resolve().is_relative_to(REPO)
        assert Path(profile).resolve() == REPO / "config" / "fastdds_large_frames.xml"
