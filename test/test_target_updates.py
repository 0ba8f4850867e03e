"""BackgroundUpdates: jobs run in order on one thread, a newer job of a waiting kind
replaces it, a failing job is reported and the thread goes on."""

from __future__ import annotations

import threading

from clip_perception.core.runtime.target_updates import BackgroundUpdates


def test_jobs_run_in_order_off_the_caller_and_the_newest_of_a_kind_wins():
    reports, ran = [], []
    updates = BackgroundUpdates(report=lambda kind, message: reports.append((kind, message)))
    gate, inside = threading.Event(), threading.Event()

    def blocking():
        inside.set()
        gate.wait(5)
        ran.append(("target", "first"))

    caller = threading.current_thread()
    updates.submit("target", blocking)       # returns at once though the job blocks
    assert inside.wait(5)
    updates.submit("target", lambda: ran.append(("target", "second")))
    updates.submit("settings", lambda: ran.append(("settings", threading.current_thread())))
    updates.submit("target", lambda: ran.append(("target", "third")))  # replaces "second"
    assert updates.pending("target") and updates.waiting("target")
    gate.set()
    assert updates.wait_idle(5)
    assert [r[:2] if r[0] == "target" else r[0] for r in ran] == [
        ("target", "first"), "settings", ("target", "third")]
    assert ran[1][1] is not caller and updates.superseded == 1
    assert not updates.pending() and reports == []
    assert updates.close(1)


def test_a_failing_job_is_reported_and_the_next_one_runs():
    reports, ran = [], []
    updates = BackgroundUpdates(report=lambda kind, message: reports.append((kind, message)))

    def broken():
        raise RuntimeError("encoder down")

    updates.submit("target", broken)
    assert updates.wait_idle(5)
    updates.submit("target", lambda: ran.append(1))
    assert updates.wait_idle(5)
    assert ran == [1] and reports[0][0] == "target" and "encoder down" in reports[0][1]
    assert updates.close(1)
    updates.submit("target", lambda: ran.append(2))  # closed: ignored
    assert ran == [1]
