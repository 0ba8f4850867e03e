"""Skip marks for tests whose optional dependencies are missing.

Never skip a module at import time (``pytest.skip(..., allow_module_level=True)``
or a module-level ``pytest.importorskip``): launch_testing's pytest plugin, which
``colcon test`` loads on a ROS install, imports every test module itself, and a
skip raised there ends the collection of the whole directory ("no tests
collected"). ``test/test_collection.py`` checks this.
"""

from __future__ import annotations

import importlib

import pytest


def has_module(name: str) -> bool:
    """True when ``name`` imports."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def needs_module(name: str, reason: str) -> pytest.MarkDecorator:
    """A mark that skips the test, saying ``reason``, where ``name`` does not import."""
    return pytest.mark.skipif(not has_module(name), reason=reason)
