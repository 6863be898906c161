"""`pip install .` (no extras) gives a working `opsgate demo`: what the demo imports and runs
is installed by the project's own dependencies, not only by the dev extra."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
OURS = ("bot", "handlers", "services", "config")
DEMO_ENTRY = ("bot.launch", "bot.cli", "bot.dev.demo")
DEMO_PROGRAMS = ("supervisord", "supervisorctl")  # bot/dev/supervisord_local.py runs them


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(module: str) -> set[str]:
    """Every module `module` imports when it runs (function-level imports included)."""
    path = REPO / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = REPO / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_type_checking(node)
        for n in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            # `from bot.dev import demo_web` imports a module too
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def runtime_imports(entries: tuple[str, ...]) -> set[str]:
    """Top-level names of the third-party modules reachable from `entries` through our code."""
    seen: set[str] = set()
    todo = list(entries)
    third_party: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in imports_of(module):
            top = name.split(".")[0]
            if top in OURS:
                as_file = REPO / (name.replace(".", "/") + ".py")
                as_package = REPO / name.replace(".", "/") / "__init__.py"
                if as_file.exists() or as_package.exists():
                    todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    return third_party


def installed_by_dependencies() -> set[str]:
    """Canonical names of every distribution `pip install .` brings in (no extras)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(text) for text in project["dependencies"]]
    closure: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        extras = requirement.extras
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in closure:
            continue
        closure.update({key, name})
        for text in metadata.requires(requirement.name) or []:
            needed = Requirement(text)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if needed.marker is None or any(needed.marker.evaluate(e) for e in environments):
                todo.append(needed)
    return {name for name in closure if "[" not in name}


def optional_extras() -> set[str]:
    """Canonical names of what the extras for users (all but `dev`) add, e.g. psycopg for
    PostgreSQL: imported only inside the code that needs them."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    return {
        canonicalize_name(Requirement(text).name)
        for extra, requirements in extras.items()
        if extra != "dev"
        for text in requirements
    }


def test_what_the_demo_imports_is_a_dependency_not_a_dev_extra() -> None:
    installed = installed_by_dependencies() | optional_extras()
    providers = metadata.packages_distributions()
    missing = {
        top: providers.get(top, ["?"])
        for top in runtime_imports(DEMO_ENTRY)
        if not {canonicalize_name(d) for d in providers.get(top, [])} & installed
    }
    assert not missing, f"imported by the demo, installed only by an extra: {missing}"


def test_the_programs_the_demo_runs_come_with_the_dependencies() -> None:
    installed = installed_by_dependencies()
    scripts = {ep.name: ep.dist for ep in metadata.entry_points(group="console_scripts")}
    for program in DEMO_PROGRAMS:
        dist = scripts[program]
        assert dist is not None
        assert canonicalize_name(dist.name) in installed, program


BLOCK_DEV_ONLY = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:  # as if not installed: optional imports carry on
            raise ModuleNotFoundError(f"{name} is only in the dev extra", name=name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["opsgate", "demo", "--help"]
from bot.cli import main
sys.exit(main())
"""


def test_opsgate_demo_help_runs_without_the_dev_extra() -> None:
    installed = installed_by_dependencies()
    dev_only = {
        top
        for top, dists in metadata.packages_distributions().items()
        if not {canonicalize_name(d) for d in dists} & installed and top not in OURS
    }
    assert {"pytest", "mypy", "openfeature"} <= dev_only
    assert "supervisor" not in dev_only
    run = subprocess.run(
        [sys.executable, "-c", BLOCK_DEV_ONLY, ",".join(sorted(dev_only))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "demo" in run.stdout
