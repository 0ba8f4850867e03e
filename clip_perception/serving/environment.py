"""Make this process fit to run the server, re-executing it once when it is not.

Two facts measured on this project's machines:

- The server needs the ``nvidia-pytriton`` wheel (it carries ``tritonserver``,
  Triton's Python backend and its stubs), used with numpy < 2 as
  ``requirements-triton.txt`` pins (PyTriton 0.7's own data path returned empty
  arrays with numpy 2.4), while the node's environment has numpy 2. The server
  therefore runs in an environment of its own, ``.venv-triton`` (``make triton-setup``).
- Triton's Python backend stub links ``libpython3.X.so.1.0``. For an interpreter
  that is not the system one, the server loads models only if that
  interpreter's lib directory is on ``LD_LIBRARY_PATH``; otherwise the stub
  fails with ``'_thread.RLock' object has no attribute '_recursion_count'``.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TRITON_VENV_VAR = "CLIP_PERCEPTION_TRITON_PYTHON"
_REEXEC_MARK = "CLIP_PERCEPTION_SERVE_REEXEC"
SETUP_HINT = ("run `make triton-setup` (it makes .venv-triton with nvidia-pytriton's tritonserver, "
              "numpy<2 and torch) and start the server with "
              "`.venv-triton/bin/python -m clip_perception.serve`")


def python_lib_dir() -> str | None:
    """The directory holding this interpreter's ``libpython3.X.so.1.0``, if it has one."""
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME")
    if libdir and soname and os.path.exists(os.path.join(libdir, soname)):
        return libdir
    return None


def with_python_lib_dir(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's lib directory first on ``LD_LIBRARY_PATH``."""
    libdir = python_lib_dir()
    env = dict(env)
    if libdir is not None:
        parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        if libdir not in parts:
            env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *parts])
    return env


def server_problem() -> str | None:
    """Why this interpreter cannot run the server, or None if it can."""
    try:
        import numpy
    except ImportError:
        return "numpy is not installed"
    if int(numpy.__version__.split(".")[0]) >= 2:
        return (f"the server's environment pins numpy < 2 and this one has numpy "
                f"{numpy.__version__}")
    try:
        import pytriton  # noqa: F401
    except ImportError:
        return "nvidia-pytriton (which carries tritonserver) is not installed"
    return None


def triton_python() -> Path | None:
    """The server environment's interpreter: $CLIP_PERCEPTION_TRITON_PYTHON or .venv-triton."""
    given = os.environ.get(TRITON_VENV_VAR)
    path = Path(given) if given else REPO_ROOT / ".venv-triton" / "bin" / "python"
    return path if path.exists() else None


def ensure_server_environment(argv: list[str]) -> None:
    """Return if the server can run here; else re-exec ``python -m clip_perception.serve argv``
    with an interpreter and environment that can, or exit with what to do."""
    env = dict(os.environ)
    problem = server_problem()
    python = sys.executable
    if problem is not None:
        other = triton_python()
        if other is None or os.environ.get(_REEXEC_MARK) or Path(sys.executable) == other:
            sys.exit(f"clip_perception.serve: {problem}; {SETUP_HINT}")
        python = str(other)
        print(f"clip_perception.serve: {problem}; running in {other}", file=sys.stderr)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
        # the other interpreter's lib dir: ask it, not us
        import subprocess
        libdir = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            capture_output=True, text=True, check=False).stdout.strip()
        if libdir:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                [libdir, *[p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]])
    else:
        env = with_python_lib_dir(env)
        if env.get("LD_LIBRARY_PATH") == os.environ.get("LD_LIBRARY_PATH"):
            return  # nothing to change
        if os.environ.get(_REEXEC_MARK):
            return  # already re-executed once; do not loop
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(python, [python, "-m", "clip_perception.serve", *argv], env)
