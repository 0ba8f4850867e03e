"""The development requirements keep a ROS machine's pytest working.

ROS's launch_testing registers a pytest plugin that pytest 9 rejects at start-up
("PluginValidationError: Plugin 'launch_testing' for hook
'pytest_pycollect_makemodule' ... Argument(s) {'path'}"), so pytest must stay
below 9 wherever these requirements are installed next to a ROS distro.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from optional import has_module

if has_module("packaging.requirements"):
    from packaging import requirements as packaging_requirements

pytestmark = pytest.mark.skipif(not has_module("packaging.requirements"),
                                reason="packaging is not installed (pip brings it)")

REPO = Path(__file__).resolve().parents[1]


def requirements(path: Path) -> dict[str, packaging_requirements.Requirement]:
    """The requirement lines of a pip requirements file, by normalized name."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = packaging_requirements.Requirement(line)
            found[re.sub(r"[-_.]+", "-", req.name).lower()] = req
    return found


def setup_py_test_extra() -> list[str]:
    """setup.py's extras_require['test'], read without running setup.py."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "extras_require":
            return ast.literal_eval(node.value)["test"]
    raise AssertionError("setup.py has no extras_require")


def assert_pytest_below_9(req) -> None:
    assert req.specifier.contains("8.4.2"), f"{req}: pytest 8 must be allowed"
    for version in ("9.0.0", "9.2.0", "10.0"):
        assert not req.specifier.contains(version), f"{req} allows pytest {version}"


def test_dev_requirements_bound_pytest_below_9() -> None:
    assert_pytest_below_9(requirements(REPO / "requirements-dev.txt")["pytest"])


def test_setup_py_test_extra_bounds_pytest_below_9() -> None:
    extra = {packaging_requirements.Requirement(r).name: packaging_requirements.Requirement(r)
             for r in setup_py_test_extra()}
    assert_pytest_below_9(extra["pytest"])


def test_dev_requirements_have_the_test_tools() -> None:
    """make test runs ruff and pytest-timeout's per-test limit (setup.cfg)."""
    assert {"pytest-timeout", "ruff"} <= set(requirements(REPO / "requirements-dev.txt"))
