"""Health judged over a window, with a fake clock."""

from __future__ import annotations

import pytest

from clip_perception.core.runtime.health import ERROR, OK, WARN, Health


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def report(health, running=True, alive=True, busy_for=None, has_target=True):
    return health.report(running=running, worker_alive=alive, busy_for=busy_for,
                         has_target=has_target)


def test_rates_are_counted_over_the_window(clock):
    health = Health(window=10.0, clock=clock)
    health.started()
    for i in range(300):  # 30 Hz in, 5 Hz out for 10 s
        clock.now = i / 30
        health.input()
        if i % 6 == 0:
            health.result()
    clock.now = 10.0
    values = report(health).values
    assert float(values["input_rate_hz"]) == pytest.approx(30.0, rel=0.01)
    assert float(values["processing_rate_hz"]) == pytest.approx(5.0, rel=0.01)
    assert float(values["seconds_since_last_result"]) == pytest.approx(10 - 294 / 30, abs=0.05)
    clock.now = 40.0  # nothing for 30 s: the rates fall to zero, not stay at their average
    values = report(health).values
    assert values["input_rate_hz"] == "0.00" and values["processing_rate_hz"] == "0.00"


def test_rates_just_after_start_use_the_time_since_start(clock):
    health = Health(window=10.0, clock=clock)
    clock.now = 100.0
    health.started()
    for i in range(10):
        clock.now = 100.0 + i * 0.1
        health.input()
    clock.now = 101.0
    assert float(report(health).values["input_rate_hz"]) == pytest.approx(10.0)


def test_one_error_is_a_warning_for_one_window_only(clock):
    health = Health(window=5.0, clock=clock)
    health.started()
    assert report(health).level == OK
    clock.now = 1.0
    health.error("image")
    r = report(health)
    assert r.level == WARN and "image" in r.message and r.values["errors_in_window"] == "1"
    clock.now = 5.9
    assert report(health).level == WARN
    clock.now = 6.1
    r = report(health)
    assert r.level == OK and r.values["errors_in_window"] == "0"


def test_an_unavailable_encoder_is_an_error_until_it_leaves_the_window(clock):
    health = Health(window=5.0, clock=clock)
    health.started()
    clock.now = 1.0
    health.error("encoder_unavailable")
    health.error("image")
    r = report(health)
    assert r.level == ERROR and "encoder unavailable" in r.message
    clock.now = 6.1
    assert report(health).level == OK


def test_a_dead_worker_is_an_error_whatever_else_holds(clock):
    health = Health(clock=clock)
    health.started()
    r = report(health, alive=False)
    assert r.level == ERROR and "died" in r.message and r.values["worker"] == "dead"
    assert report(health, running=False, alive=False).level == OK, "stopped is not dead"


def test_a_job_running_longer_than_stall_after_is_an_error(clock):
    health = Health(stall_after=3.0, clock=clock)
    health.started()
    assert report(health, busy_for=2.9).level == OK
    r = report(health, busy_for=3.1)
    assert r.level == ERROR and "stalled" in r.message


def test_frames_without_results_for_a_window_is_a_warning(clock):
    health = Health(window=2.0, clock=clock)
    health.started()
    for i in range(40):
        clock.now = i * 0.1
        health.input()
    assert report(health).level == WARN
    assert "no result" in report(health).message
    assert report(health, has_target=False).level == OK, "no target: no results expected"
    health.result()
    assert report(health).level == OK


def test_a_failed_target_update_warns_until_a_good_one(clock):
    health = Health(clock=clock)
    health.started()
    health.target_error = "poison: RuntimeError()"
    r = report(health)
    assert r.level == WARN and "poison" in r.message
    health.target_error = None
    assert report(health).level == OK


def test_window_and_stall_must_be_positive():
    with pytest.raises(ValueError):
        Health(window=0)


def test_event_history_stays_bounded_without_reports(clock):
    health = Health(window=1.0, clock=clock)
    health.started()
    for i in range(10_000):  # 100 s at 100 Hz, never reported
        clock.now = i / 100
        health.input()
        health.result()
        health.error("image")
    assert len(health._inputs.times) <= 101 and len(health._error_kinds) <= 101


def test_a_camera_that_stops_is_a_warning_until_frames_come_back(clock):
    health = Health(window=2.0, clock=clock, no_frames_after=5.0)
    health.started()
    clock.now = 4.0
    assert report(health).level == OK, "not yet"
    clock.now = 6.0
    r = report(health)
    assert r.level == WARN and r.message == "no frames for 6 s"
    health.input()
    health.result()
    assert report(health).level == OK
    clock.now = 12.5
    assert report(health).message == "no frames for 6 s"
    assert report(health, running=False).level == OK, "inactive: no frames expected"
    health.input()
    health.result()
    assert report(health).level == OK
