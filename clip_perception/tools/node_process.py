"""Run the perception node in a process of its own, on this machine's DDS only.

Used by the demo, the ROS benchmark and the tests: the child gets
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a ROS_DOMAIN_ID, and the Fast DDS
large-frame profile.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from ..ros.dds_profile import PROFILE_ENV_VARS, env_with_profile


def local_ros_env(domain: int | str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's env) with loopback-only discovery in ``domain``
    and the large-frame Fast DDS profile."""
    env = env_with_profile(dict(os.environ if base is None else base))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain)
    env.pop("ROS_LOCALHOST_ONLY", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def use_local_ros(env: Mapping[str, str]) -> None:
    """Make this process's own rclpy use the same DDS settings as ``env`` (before rclpy.init)."""
    for name in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", *PROFILE_ENV_VARS):
        os.environ[name] = env[name]
    os.environ.pop("ROS_LOCALHOST_ONLY", None)


def _param(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(repr(v) if isinstance(v, str) else str(v) for v in value) + "]"
    return str(value)


def node_command(params: Mapping[str, object] | None = None,
                 remaps: Mapping[str, str] | None = None) -> list[str]:
    """``python -m clip_perception.ros.node --ros-args -r ... -p ...``."""
    cmd = [sys.executable, "-m", "clip_perception.ros.node", "--ros-args"]
    for old, new in (remaps or {}).items():
        cmd += ["-r", f"{old}:={new}"]
    for key, value in (params or {}).items():
        cmd += ["-p", f"{key}:={_param(value)}"]
    return cmd


class NodeProcess:
    """The node as a child process whose output goes to ``log_path``."""

    def __init__(self, env: Mapping[str, str], log_path: str | Path,
                 params: Mapping[str, object] | None = None,
                 remaps: Mapping[str, str] | None = None, cwd: str | Path | None = None):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(node_command(params, remaps), env=dict(env),
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """Terminate (SIGTERM, then SIGKILL) and return the exit status."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode
