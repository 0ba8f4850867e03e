"""Run ``python -m clip_perception.serve`` as a child process on loopback (tests, benchmark):
on tritonserver's own Python backend.

The server runs in its own environment (``.venv-triton``, see
:mod:`clip_perception.serving.environment`) on free ports of 127.0.0.1. It can
be killed and started again on the same ports, as an outage would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ..serving.environment import REPO_ROOT, triton_python


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free on ``host`` a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class TritonServerProcess:
    """``clip_perception.serve`` for ``model`` as ``name`` on 127.0.0.1, output to ``log_path``
    (``extra_args`` are more ``serve`` flags, e.g. ``("--max-batch", "4")``; ``python_path``
    more directories on its ``PYTHONPATH``, e.g. where a user's encoder module is)."""

    def __init__(self, model: str, log_path: str | Path, name: str = "enc",
                 python: str | Path | None = None, extra_args: tuple[str, ...] = (),
                 python_path: tuple[str | Path, ...] = ()):
        python = python or triton_python()
        if python is None:
            raise FileNotFoundError("no .venv-triton: run `make triton-setup`")
        self.python = str(python)
        self.model, self.name = model, name
        self.log_path = Path(log_path)
        self.grpc_port, self.http_port, self.metrics_port = free_ports(3)
        self.extra_args = tuple(extra_args)
        self.python_path = [str(p) for p in python_path]
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._home: str | None = None

    @property
    def url(self) -> str:
        return f"triton://127.0.0.1:{self.grpc_port}/{self.name}"

    def command(self) -> list[str]:
        return [self.python, "-m", "clip_perception.serve", "--model", self.model,
                "--name", self.name, "--host", "127.0.0.1",
                "--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
                "--metrics-port", str(self.metrics_port), *self.extra_args]

    def start(self) -> TritonServerProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *self.python_path,
             *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
        env["PYTHONUNBUFFERED"] = "1"
        # serve's exported repository in a directory of ours, removed by stop(): a killed
        # server cannot
        self._home = tempfile.mkdtemp(prefix="cp-triton-")
        env["TMPDIR"] = self._home
        self._log = open(self.log_path, "ab")
        # a session of its own: stop() ends tritonserver and the backend stubs with it
        self.proc = subprocess.Popen(self.command(), env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                     start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 120.0,
                   models: tuple[str, ...] = ("_detect", "_image", "_text"),
                   poll: float = 0.1) -> float:
        """Block until the models (suffixes of the name) are ready; returns the seconds waited."""
        import tritonclient.grpc as grpcclient

        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not self.alive():
                raise RuntimeError(f"the Triton server exited:\n{self.log()[-3000:]}")
            # a fresh channel per poll: a channel that failed waits out gRPC's reconnect
            # backoff (seconds) before it looks again
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")
            try:
                if all(client.is_model_ready(f"{self.name}{suffix}", client_timeout=2.0)
                       for suffix in models):
                    return time.monotonic() - start
            except Exception:  # noqa: BLE001 - not up yet
                pass
            finally:
                client.close()
            time.sleep(poll)
        raise TimeoutError(f"Triton server not ready after {timeout} s:\n{self.log()[-3000:]}")

    def stop(self, hard: bool = True, timeout: float = 20.0) -> None:
        """End the server and everything it started: SIGKILL to all of it (an outage),
        or SIGTERM to the server, which then stops Triton itself."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                if hard:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:
                    self.proc.terminate()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        try:  # stragglers of the session (stubs) once the leader is gone
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def __enter__(self) -> TritonServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
