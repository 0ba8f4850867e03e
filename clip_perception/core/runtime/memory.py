"""Give memory back after a model is released, and read this process's footprint."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:  # pragma: no cover - depends on the platform
        return None


_LIBC = _libc()


def malloc_trim() -> bool:
    """Return free heap pages of every glibc arena to the OS; False where there is no
    ``malloc_trim`` (not glibc)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


M_ARENA_MAX = -8
ARENA_MAX = 2


def configure_allocator(environ: dict | None = None) -> dict[str, int]:
    """Cap glibc malloc at ``ARENA_MAX`` arenas (unless ``MALLOC_ARENA_MAX`` is set):
    frames are allocated on the executor thread and freed on the loop's threads,
    and every thread that allocates may otherwise get an arena of its own (up to
    8 per core), each keeping freed memory. Returns what was set ({} where not glibc).

    The mmap threshold is left dynamic: a fixed low one made every large torch
    temporary an mmap/munmap pair and cut the soak's results by a third.
    ``CLIP_PERCEPTION_MALLOC=default`` leaves the allocator as it is.
    """
    import os

    env = os.environ if environ is None else environ
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None or env.get("CLIP_PERCEPTION_MALLOC", "") == "default":
        return {}
    if "MALLOC_ARENA_MAX" not in env and mallopt(M_ARENA_MAX, ARENA_MAX):
        return {"arena_max": ARENA_MAX}
    return {}


def release_memory() -> None:
    """After dropping a model: collect cycles, empty torch's CUDA cache, trim the heap."""
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # torch missing or broken: nothing cached there
        pass
    malloc_trim()


def footprint(pid: int | str = "self") -> dict[str, int]:
    """``rss_kb``, ``threads`` and ``fds`` of a Linux process (from /proc)."""
    out = {"rss_kb": 0, "threads": 0, "fds": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_kb"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out
