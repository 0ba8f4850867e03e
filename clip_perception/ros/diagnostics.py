"""The loop's health on ``/diagnostics``: diagnostic_updater where installed, else the same
message built here.

:func:`fill` maps a :class:`~clip_perception.core.runtime.health.HealthReport` and
figures onto anything with diagnostic_updater's ``DiagnosticStatusWrapper``
interface (``summary(level, message)``, ``add(key, value)``). :class:`Diagnostics`
publishes it every ``period`` s, through ``diagnostic_updater.Updater`` when
that package imports (a ROS install) and through a plain publisher otherwise.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from ..core.runtime.health import HealthReport

TASK = "pipeline"


def import_updater(name: str = "diagnostic_updater"):
    """The diagnostic_updater module, or None where it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


class _Wrapper:
    """Stand-in for diagnostic_updater.DiagnosticStatusWrapper: a DiagnosticStatus to fill."""

    def __init__(self) -> None:
        self.status = DiagnosticStatus()

    def summary(self, level: int, message: str) -> None:
        self.status.level = bytes([int(level)]) if isinstance(
            self.status.level, bytes) else int(level)
        self.status.message = message

    def add(self, key: str, value) -> None:
        self.status.values.append(KeyValue(key=str(key), value=str(value)))


def fill(stat, report: HealthReport, figures: dict[str, object]):
    """Write ``report`` and ``figures`` (sorted by key) into ``stat``; returns ``stat``."""
    stat.summary(report.level, report.message)
    for key, value in sorted({**figures, **report.values}.items()):
        stat.add(key, str(value))
    return stat


class Diagnostics:
    """Publishes ``collect() -> (HealthReport, figures, hardware_id)`` every ``period`` s."""

    def __init__(self, node, collect: Callable[[], tuple[HealthReport, dict, str]],
                 period: float, updater_module=None):
        self.node = node
        self._collect = collect
        self._updater = None
        self._pub = None
        module = updater_module if updater_module is not None else import_updater()
        if module is not None:
            self._updater = module.Updater(node)
            self._updater.setHardwareID("none")
            self._updater.add(TASK, self._run_task)
        else:
            self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period, self.update)

    @property
    def uses_updater(self) -> bool:
        return self._updater is not None

    def _run_task(self, stat):
        report, figures, hwid = self._collect()
        if hasattr(self._updater, "setHardwareID"):
            self._updater.setHardwareID(hwid or "none")
        return fill(stat, report, figures)

    def update(self) -> None:
        if self._updater is not None:
            self._updater.force_update()
            return
        report, figures, hwid = self._collect()
        stat = fill(_Wrapper(), report, figures).status
        stat.name = f"{self.node.get_fully_qualified_name()}: {TASK}"
        stat.hardware_id = hwid
        msg = DiagnosticArray(status=[stat])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._pub.publish(msg)
