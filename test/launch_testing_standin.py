"""A pytest plugin that collects the way launch_testing's plugin does on a ROS install.

launch_testing (ros2/launch, ``launch_testing/pytest/hooks.py``) implements
``pytest_pycollect_makemodule`` by importing every test module itself (to look
for ``generate_test_description``) before pytest collects it. A test module
that skips itself at import time then ends the collection of the whole
directory. This stand-in does the same import, so that ``test/test_collection.py``
sees what ``colcon test`` sees where launch_testing is not installed.
"""

from __future__ import annotations

import pathlib

import pytest
from _pytest.pathlib import import_path


def pytest_pycollect_makemodule(module_path: pathlib.Path, parent):
    import_path(module_path, root=None, consider_namespace_packages=False)  # as launch_testing
    if module_path.name == "__init__.py":
        return pytest.Package.from_parent(parent, path=module_path)
    return pytest.Module.from_parent(parent=parent, path=module_path)
