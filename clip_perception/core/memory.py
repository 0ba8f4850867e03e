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


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
FRAME_MMAP_THRESHOLD = 256 * 1024  # frames (640x480 rgb8 is 900 KiB) are mmapped, never pooled
ARENA_MAX = 2


def configure_allocator(environ: dict | None = None) -> dict[str, int]:
    """Tune glibc malloc for a process that allocates a camera frame per message on one
    thread and frees it on another; returns what was set ({} where not glibc).

    * a fixed mmap threshold: glibc otherwise raises it to the size of the last freed
      mmapped block, after which every frame-sized buffer comes from (and fragments)
      the heap arenas instead of going back to the OS when freed;
    * at most ``ARENA_MAX`` arenas, unless ``MALLOC_ARENA_MAX`` is set.

    ``CLIP_PERCEPTION_MALLOC=default`` leaves the allocator as it is.
    """
    import os

    env = os.environ if environ is None else environ
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None or env.get("CLIP_PERCEPTION_MALLOC", "") == "default":
        return {}
    done = {}
    if "MALLOC_MMAP_THRESHOLD_" not in env and mallopt(M_MMAP_THRESHOLD, FRAME_MMAP_THRESHOLD):
        done["mmap_threshold"] = FRAME_MMAP_THRESHOLD
    if "MALLOC_ARENA_MAX" not in env and mallopt(M_ARENA_MAX, ARENA_MAX):
        done["arena_max"] = ARENA_MAX
    return done


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
