"""``serve``: the exported model repository on tritonserver's own Python backend.

PyTriton's wheel carries the ``tritonserver`` binary, Triton's Python backend
and its stubs; ``serve`` runs the repository that ``--export-repository`` writes
(the one NVIDIA's container runs) on them, with its own import path in the
models' config (the backend's stub ignores ``PYTHONPATH``).

The server is a child of this process, in its process group: stopping this
process (SIGINT, SIGTERM) stops tritonserver and waits for it, and killing the
group kills both.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

from ..core.model.clip_encoder import resolve_device
from .environment import with_python_lib_dir
from .model_repository import write_repository

READY_TIMEOUT = 600.0  # seconds to wait for the models (a first CLIP download is slow)


def python_backend(python: str | Path, into: Path) -> tuple[Path, Path, Path]:
    """tritonserver, a backend directory with Triton's Python backend and the stub for
    ``python``'s version, and the libraries tritonserver needs, from PyTriton's wheel."""
    probe = ("import pathlib, sys, pytriton; p = pathlib.Path(pytriton.__file__).parent; "
             "print(p); print(p.parent / 'nvidia_pytriton.libs'); "
             "print(f'{sys.version_info[0]}.{sys.version_info[1]}')")
    pkg, libs, version = subprocess.run([str(python), "-c", probe], capture_output=True,
                                        text=True, check=True).stdout.split()
    server = Path(pkg) / "tritonserver"
    backend = into / "backends" / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for f in (server / "backends" / "python").iterdir():
        if f.is_file():
            shutil.copy(f, backend)
    shutil.copy(server / "python_backend_stubs" / version / "triton_python_backend_stub", backend)
    return server / "bin" / "tritonserver", into / "backends", Path(libs)


def lib_dir(python: str | Path) -> str:
    """``python``'s LIBDIR (where its ``libpython3.X.so`` is), asked of that interpreter."""
    if Path(python) == Path(sys.executable):
        return sysconfig.get_config_var("LIBDIR") or ""
    return subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_config_var('LIBDIR'))"],
                          capture_output=True, text=True, check=True).stdout.strip()


def server_environment(python: str | Path, libs: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` for tritonserver with ``python``'s stub: its libpython and the wheel's
    libraries on ``LD_LIBRARY_PATH`` and its interpreter first on ``PATH``. (The stub
    ignores ``PYTHONPATH``: the models get their import path from their config.)"""
    env = with_python_lib_dir(dict(env))
    parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in (lib_dir(python), str(libs)) if p]
                                             + parts)
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
    return env


def import_path() -> list[str]:
    """This process's ``sys.path``, absolute (its empty entry is the current directory):
    everything the node's ``model`` could import here, ``PYTHONPATH`` and a sourced
    workspace included."""
    return [os.path.abspath(p or os.curdir) for p in sys.path]


def server_command(binary: Path, repository: Path, backends: Path, host: str, http_port: int,
                   grpc_port: int, metrics_port: int, verbose: bool = False) -> list[str]:
    """The tritonserver command line for ``repository`` on ``host``."""
    return [str(binary), f"--model-repository={repository}",
            f"--backend-directory={backends}", f"--http-address={host}",
            f"--grpc-address={host}", f"--metrics-address={host}", f"--http-port={http_port}",
            f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}",
            f"--log-verbose={1 if verbose else 0}"]


def wait_ready(proc: subprocess.Popen, host: str, http_port: int,
               timeout: float = READY_TIMEOUT) -> bool:
    """Poll tritonserver's HTTP readiness until it answers 200; False if it exited first."""
    address = "127.0.0.1" if host in ("0.0.0.0", "") else host
    url = f"http://{address}:{http_port}/v2/health/ready"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def serve_repository(args) -> int:
    """Export ``args.model`` to a temporary repository and run it on tritonserver until
    interrupted; tritonserver's exit status (0 after a clean stop)."""
    device = str(resolve_device(args.device))  # the instances' kind: cpu or cuda[:N]
    with tempfile.TemporaryDirectory(prefix="cp-serve-") as tmp:
        root = Path(tmp)
        write_repository(root / "repo", args.model, args.name, device, args.instances,
                         args.max_batch, args.max_queue_delay_us, args.precision,
                         args.download_root, args.frame_cache_frames, args.frame_cache_mb,
                         python_path=import_path())
        binary, backends, libs = python_backend(sys.executable, root)
        command = server_command(binary, root / "repo", backends, args.host, args.http_port,
                                 args.grpc_port, args.metrics_port, args.verbose)
        env = server_environment(sys.executable, libs, os.environ)
        proc = subprocess.Popen(command, env=env)  # our process group: killed with us
        try:
            if wait_ready(proc, args.host, args.http_port):
                print(f"clip_perception.serve: serving '{args.model}' as triton://{args.host}:"
                      f"{args.grpc_port}/{args.name} on tritonserver's Python backend (http "
                      f"{args.http_port}, metrics {args.metrics_port}, {args.instances} "
                      f"instance(s) on {device}, dynamic batches of up to {args.max_batch} "
                      "frames)", flush=True)
            code = proc.wait()
            if code != 0:
                print(f"clip_perception.serve: tritonserver exited with status {code}; its "
                      "log above says why (a model that failed to load, a port in use)",
                      file=sys.stderr)
            return code
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (serve turns it into this)
            return stop(proc)
        finally:
            if proc.poll() is None:
                stop(proc)


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM tritonserver (it unloads its models and exits), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 0 if proc.returncode in (0, -signal.SIGTERM) else proc.returncode
