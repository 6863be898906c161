"""README.md stands on its own in the repository: every repo path it names exists, and no link
leads outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TOP = ("bot", "config", "services", "handlers", "bench", "tests")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
REPO_PATH = re.compile(rf"(?<![\w/.~$-])((?:{'|'.join(TOP)})/[\w./*-]*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
COPY = re.compile(r"\bcp\s+\S+\s+(\S+)")  # `cp A B`: B is made by the reader


def inline_code(text: str) -> list[str]:
    """Inline code spans outside fenced blocks."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return INLINE_CODE.findall(prose)


def named_paths(text: str) -> set[str]:
    paths = {
        match.rstrip(".,:;") for span in inline_code(text) for match in REPO_PATH.findall(span)
    }
    made_by_reader = {target for span in inline_code(text) for target in COPY.findall(span)}
    return paths - made_by_reader


def exists(path: str) -> bool:
    return any(REPO.glob(path)) if "*" in path else (REPO / path).exists()


def test_readme_names_repo_paths() -> None:
    # The check below must have something to check.
    assert {"config/opsgate.service", "config/opsgate.example.toml"} <= named_paths(
        README.read_text()
    )


def test_every_repo_path_the_readme_names_exists() -> None:
    missing = sorted(path for path in named_paths(README.read_text()) if not exists(path))
    assert not missing, f"README.md names paths that are not in the repository: {missing}"


def test_no_link_leaves_the_repository() -> None:
    text = README.read_text()
    assert "../" not in text, "README.md points outside the repository (../)"
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor
        local = (REPO / target.split("#")[0]).resolve()
        assert local.is_relative_to(REPO), target
        assert local.exists(), f"README.md links to a missing file: {target}"


def test_the_path_finder_finds_and_skips_what_it_should() -> None:
    sample = (
        "Run `opsgate check-config config/opsgate.toml` after "
        "`cp config/opsgate.example.toml config/opsgate.toml`; see `bot/dev/*.script`, "
        "`/srv/app/config/x`, `~/bench/y` and `services/`.\n```\nbot/not/checked.py\n```\n"
    )
    assert named_paths(sample) == {"config/opsgate.example.toml", "bot/dev/*.script", "services/"}
    assert exists("bot/dev/*.script")
    assert not exists("bot/demo.script")
