"""The architecture page's module table (docs/architecture.md) matches the package's modules."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "clip_perception"


def table_modules(page: str) -> list[str]:
    """Module paths named in the first column of the "Modules" table."""
    section = page.split("\n## Modules", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "no module table under 'Modules'"
    names = []
    for row in rows:
        first_column = row.split("|")[1]
        names += re.findall(r"`([^`]+\.py)`", first_column)
    return names


def package_modules() -> set[str]:
    """Every module of clip_perception, relative to the package, ``__init__`` aside."""
    return {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
            if path.name != "__init__.py" and "__pycache__" not in path.parts}


def test_architecture_module_table_matches_the_package() -> None:
    listed = table_modules((REPO / "docs" / "architecture.md").read_text())
    assert len(listed) == len(set(listed)), "a module is listed twice"
    modules, listed = package_modules(), set(listed)
    assert not modules - listed, f"not in docs/architecture.md's table: {sorted(modules - listed)}"
    assert not listed - modules, f"in the table, not in the package: {sorted(listed - modules)}"
