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


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    lines = page.read_text().splitlines()
    return {github_anchor(line.lstrip("#")) for line in lines if line.startswith("#")}


def test_readme_is_short_and_opens_with_the_two_make_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 16 * 1024
    first_block = readme.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]


def test_every_local_link_in_readme_and_docs_resolves() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
