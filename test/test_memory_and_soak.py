"""Allocator settings, /proc footprint and the soak's verdicts, without DDS."""

from __future__ import annotations

import os
import threading

from clip_perception.core.runtime import memory
from clip_perception.tools.soak import Cycle, Soak, _report, _windows


def test_arena_cap_respects_the_users_settings():
    if getattr(memory._LIBC, "mallopt", None) is None:  # not glibc: nothing to set
        assert memory.configure_allocator({}) == {}
        return
    assert memory.configure_allocator({}) == {"arena_max": memory.ARENA_MAX}
    assert memory.configure_allocator({"MALLOC_ARENA_MAX": "8"}) == {}
    assert memory.configure_allocator({"CLIP_PERCEPTION_MALLOC": "default"}) == {}


def test_footprint_counts_this_process_threads_and_fds():
    before = memory.footprint()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        during = memory.footprint()
    finally:
        os.close(fd)
        stop.set()
        thread.join()
    assert during["threads"] == before["threads"] + 1
    assert during["fds"] == before["fds"] + 1
    assert during["rss_kb"] > 10_000


def soak_with(rss_end_kb: int, results: list[float], first_stamp: int) -> Soak:
    soak = Soak()
    soak.start = 0.0
    soak.samples = [(t, {"rss_kb": 100_000 if t < 60 else (rss_end_kb if t == 120 else 100_000),
                         "threads": 20, "fds": 23}) for t in (0, 60, 90, 120)]
    soak.active = [[0.0, 30.0], [31.0, 120.0]]
    soak.cycles = [Cycle(requested=0, activate_requested=1000, active_at=31.0,
                         first_stamp=first_stamp)]
    soak.results = results
    return soak


def test_windows_count_whole_10s_windows_of_active_periods_only():
    results = [t + 0.5 for t in range(0, 120, 3)]
    good, total, empty = _windows(soak_with(100_000, results, 2000))
    assert (good, total, empty) == (11, 11, [])
    gap = [t for t in results if not 41 <= t < 51]
    good, total, empty = _windows(soak_with(100_000, gap, 2000))
    assert good == 10 and empty == ["41-51 s"]


def test_the_verdict_needs_flat_rss_results_and_fresh_reactivations(capsys):
    results = [t + 0.5 for t in range(0, 120, 3)]
    assert _report(soak_with(104_000, results, 2000)) == 0
    assert _report(soak_with(106_000, results, 2000)) == 1, "6% RSS growth"
    assert _report(soak_with(100_000, results, 500)) == 1, "a stale frame after activation"
    out = capsys.readouterr().out
    assert "soak_rss_growth=0.0600" in out and "(stale: 1, no result: 0)" in out
