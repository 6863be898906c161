"""The house rules of ARCHITECTURE.md, checked on the tree: bot -> handlers -> services -> config,
nothing points back, services and config never touch Telegram, bench never imports tests."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> top-level names it must never import
FORBIDDEN = {
    "config": {"telegram", "bot", "handlers", "services"},
    "services": {"telegram", "bot", "handlers"},
    "handlers": {"bot"},
    "bench": {"tests"},
}


def imported_tops(source: str) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every import in `source`, lazy ones inside functions too."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module.split(".")[0]


def violations(root: Path) -> list[str]:
    found = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, top in imported_tops(path.read_text()):
                if top in forbidden:
                    found.append(f"{path.relative_to(root)}:{line} imports {top}")
    return found


def test_the_tree_keeps_the_layer_rules() -> None:
    assert violations(REPO) == []


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("services/deploy/planted.py", "from telegram import Bot"),
        ("services/planted.py", "import handlers.render"),
        ("config/planted.py", "from services.errors import OpsgateError"),
        ("handlers/planted.py", "from bot.app import build_application"),
        ("bench/planted.py", "def f():\n    from tests.e2e import conftest"),
    ],
)
def test_a_planted_violation_is_found(tmp_path: Path, where: str, line: str) -> None:
    for package in FORBIDDEN:
        (tmp_path / package).mkdir()
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text(f'"""planted"""\n\n{line}\n')
    [found] = violations(tmp_path)
    assert found.startswith(f"{where}:")
