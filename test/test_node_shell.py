"""The node's ROS pieces in-process, without a peer: parameter hooks (Jazzy's post-set
callback and the Humble fallback) and the diagnostics mapping (diagnostic_updater
where importable, the built-in equivalent otherwise)."""

from __future__ import annotations

import sys
import types

import pytest
from rcl_interfaces.msg import SetParametersResult

from clip_perception.core.runtime.health import ERROR, WARN, HealthReport
from clip_perception.ros import diagnostics as diag
from clip_perception.ros import param_hooks

pytestmark = pytest.mark.ros


@pytest.fixture
def context(ros_domain):
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx, domain_id=ros_domain)
    yield ctx
    rclpy.shutdown(context=ctx)


def spin_once(node, context, times=3):
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    for _ in range(times):
        executor.spin_once(timeout_sec=0.05)
    executor.remove_node(node)


@pytest.mark.parametrize("post_set", [True, False], ids=["post_set", "humble_timer"])
def test_apply_runs_after_the_value_is_set_and_only_for_accepted_values(context, post_set):
    import rclpy
    from rclpy.parameter import Parameter

    node = rclpy.create_node("hooks", context=context)
    node.declare_parameter("x", 1)
    seen = []

    def validate(params):
        ok = all(p.value >= 0 for p in params)
        return SetParametersResult(successful=ok, reason="" if ok else "negative")

    def apply(params):  # what `ros2 param get` would say, from inside the callback
        seen.append((params[0].value, node.get_parameter("x").value))

    kind = param_hooks.install(node, validate, apply, post_set=post_set)
    assert kind == ("post_set" if post_set else "timer")
    assert not node.set_parameters([Parameter("x", value=-1)])[0].successful
    assert node.set_parameters([Parameter("x", value=5)])[0].successful
    if not post_set:
        assert seen == [], "the fallback applies from the executor, after the set returned"
        spin_once(node, context)
    assert seen == [(5, 5)], "applied once, after the value was set; refused values never"
    spin_once(node, context)
    assert seen == [(5, 5)], "the fallback's one-shot timer is gone"
    node.destroy_node()


def test_this_rclpy_has_the_post_set_callback(context):
    import rclpy

    node = rclpy.create_node("probe_api", context=context)
    assert param_hooks.has_post_set(node), "Jazzy's rclpy has add_post_set_parameters_callback"
    assert not param_hooks.has_post_set(types.SimpleNamespace())
    node.destroy_node()


@pytest.mark.parametrize("post_set", [True, False], ids=["post_set", "humble_timer"])
def test_the_node_follows_a_target_set_as_a_parameter(context, post_set):
    from rclpy.parameter import Parameter

    from clip_perception.ros.node import PerceptionNode

    node = PerceptionNode(context=context, post_set=post_set)
    assert node.parameter_hooks == ("post_set" if post_set else "timer")
    refused = node.set_parameters([Parameter("target", value="pick up")])[0]
    assert not refused.successful and "names no object" in refused.reason
    assert node.set_parameters([Parameter("target", value="find the red block")])[0].successful
    if not post_set:
        spin_once(node, context)
    assert _until(lambda: node.targets == ("red block",)), "embedded off the executor"
    assert node.get_parameter("target").value == "find the red block"
    node.stop()
    node.destroy_node()


class FakeWrapper:
    """diagnostic_updater.DiagnosticStatusWrapper's interface."""

    def __init__(self):
        self.level, self.message, self.values = None, None, []

    def summary(self, level, message):
        self.level, self.message = level, message

    def add(self, key, value):
        self.values.append((key, value))


def fake_updater_module():
    module = types.ModuleType("fake_diagnostic_updater")

    class Updater:
        def __init__(self, node):
            self.node, self.tasks, self.published, self.hwid = node, [], [], None

        def setHardwareID(self, hwid):  # noqa: N802 - the library's name
            self.hwid = hwid

        def add(self, name, fn):
            self.tasks.append((name, fn))

        def force_update(self):
            self.published = [fn(FakeWrapper()) for _, fn in self.tasks]

    module.Updater = Updater
    return module


def test_fill_maps_a_report_onto_a_status_wrapper():
    report = HealthReport(WARN, "2 errors", {"errors_in_window": "2"})
    stat = diag.fill(FakeWrapper(), report, {"frames_received": 7})
    assert (stat.level, stat.message) == (WARN, "2 errors")
    assert stat.values == [("errors_in_window", "2"), ("frames_received", "7")]


def test_import_updater_finds_an_installed_module_and_none_otherwise(monkeypatch):
    monkeypatch.setitem(sys.modules, "diagnostic_updater", fake_updater_module())
    assert diag.import_updater() is sys.modules["diagnostic_updater"]
    monkeypatch.setitem(sys.modules, "diagnostic_updater", None)  # import raises ImportError
    assert diag.import_updater() is None


@pytest.mark.parametrize("with_updater", [True, False], ids=["diagnostic_updater", "fallback"])
def test_diagnostics_publish_the_health_through_either_path(context, with_updater,
                                                            monkeypatch):
    import rclpy

    if with_updater:
        monkeypatch.setitem(sys.modules, "diagnostic_updater", fake_updater_module())
    else:
        monkeypatch.setitem(sys.modules, "diagnostic_updater", None)
    node = rclpy.create_node("diag", context=context)
    report = HealthReport(ERROR, "worker thread died", {"worker": "dead"})
    d = diag.Diagnostics(node, lambda: (report, {"frames_received": 3}, "cpu"), period=60.0)
    assert d.uses_updater is with_updater
    published = []
    if with_updater:
        d.update()
        stat = d._updater.published[0]
        assert d._updater.hwid == "cpu"
        assert (stat.level, stat.message) == (ERROR, "worker thread died")
        assert ("worker", "dead") in stat.values
    else:
        d._pub.publish = published.append
        d.update()
        status = published[0].status[0]
        assert status.level == bytes([ERROR]) and status.message == "worker thread died"
        assert status.name == "/diag: pipeline" and status.hardware_id == "cpu"
        assert {kv.key: kv.value for kv in status.values} == {"worker": "dead",
                                                              "frames_received": "3"}
    node.destroy_node()


def _until(predicate, timeout: float = 10.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_a_command_is_accepted_at_once_and_a_refused_embedding_keeps_the_old_target(context):
    """Embedding runs off the executor: setting ``target`` returns before a slow text
    encoder has finished; a target that cannot be embedded is refused afterwards, the
    old one stays in force and ``target`` is set back to it."""
    import time

    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from clip_perception.ros.node import PerceptionNode

    node = PerceptionNode(context=context, parameter_overrides=[
        Parameter("model", value="faulty_encoder:factory"), Parameter("autostart", value=False)])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        started = time.monotonic()
        result = node.set_parameters([Parameter("target", value="find the sloth")])[0]
        took = time.monotonic() - started
        assert result.successful and took < 1.0, f"set_parameters took {took:.2f} s"
        assert node.targets == (), "not live before it is embedded"
        assert _until(lambda: node.targets == ("sloth",))
        assert node.set_parameters([Parameter("target", value="find the poison")])[0].successful
        assert _until(lambda: node.counters()["target_updates_failed"] == 1)
        assert _until(lambda: node.get_parameter("target").value == "find the sloth")
        assert node.targets == ("sloth",)
        assert node.updates.wait_idle(5)
        assert node.targets == ("sloth",) and node.counters()["target_updates"] == 1
    finally:
        node.stop()
        node.destroy_node()


@pytest.mark.parametrize("model,says", [
    ("faulty_encoder:bad_input_size", "ValueError"),
    ("faulty_encoder:out_of_memory", "OutOfMemoryError: CUDA out of memory"),
])
def test_any_configure_error_is_logged_with_its_type_and_configure_fails(context, capfd,
                                                                         model, says):
    """rclpy swallows an exception raised in a transition callback: whatever goes wrong,
    configure fails and the log says what."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from clip_perception.ros.node import PerceptionNode

    node = PerceptionNode(context=context, parameter_overrides=[
        Parameter("model", value=model), Parameter("autostart", value=False)])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._state_machine.current_state[1] == "unconfigured"
        err = capfd.readouterr().err
        assert says in err and "configure failed" in err, err
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE  # and again
    finally:
        node.stop()
        node.destroy_node()
