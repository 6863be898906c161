"""`opsgate run` restarts itself on the precompiled optimized bytecode, only when it is there,
only for `run`, never when told not to, and the commands opsgate runs do not inherit it."""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
from importlib.util import cache_from_source
from pathlib import Path

import pytest

from bot import launch

REPO = Path(__file__).resolve().parents[2]


def test_run_restarts_only_when_the_bytecode_is_there_and_nothing_says_no(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "flags", type("Flags", (), {"optimize": 0})())
    monkeypatch.delenv("OPSGATE_OPTIMIZE", raising=False)
    monkeypatch.setattr(launch, "optimized_bytecode_installed", lambda: True)
    assert launch.wants_optimized_restart(["run"])
    assert not launch.wants_optimized_restart(["run", "-h"])
    assert not launch.wants_optimized_restart(["run", "--help"])
    for other in (["doctor"], ["check-config", "ops.toml"], ["precompile"], []):
        assert not launch.wants_optimized_restart(other), other
    monkeypatch.setenv("OPSGATE_OPTIMIZE", "0")
    assert not launch.wants_optimized_restart(["run"])
    monkeypatch.delenv("OPSGATE_OPTIMIZE")
    monkeypatch.setattr(launch, "optimized_bytecode_installed", lambda: False)
    assert not launch.wants_optimized_restart(["run"])
    monkeypatch.setattr(launch, "optimized_bytecode_installed", lambda: True)
    for level in (1, 2):  # already optimized (2: restarted; 1: the operator's PYTHONOPTIMIZE)
        monkeypatch.setattr(sys, "flags", type("Flags", (), {"optimize": level})())
        assert not launch.wants_optimized_restart(["run"])


def test_an_optimized_restart_runs_the_same_command_under_optimize_2(tmp_path: Path) -> None:
    """The real exec, with a stand-in for bot.cli that reports what the new process sees."""
    if not launch.optimized_bytecode_installed():
        assert not os.environ.get("CI"), "`make install` runs `opsgate precompile`"
        pytest.skip("no optimized bytecode here: run `opsgate precompile` (CI always has it)")
    stand_in = tmp_path / "bot_cli_stand_in.py"
    stand_in.write_text(
        "import os, sys\n"
        "def main():\n"
        "    print(sys.flags.optimize, os.environ.get('PYTHONOPTIMIZE'), sys.argv[1:])\n"
        "    print(sys.orig_argv[1])\n"
        "    return 0\n"
    )
    # The gate looks at bot.cli's own bytecode: it is asked first, then the stand-in takes
    # bot.cli's place.
    script = (
        "import sys, bot.launch as launch, bot_cli_stand_in\n"
        "installed = launch.optimized_bytecode_installed()\n"
        "launch.optimized_bytecode_installed = lambda: installed\n"
        "sys.modules['bot.cli'] = bot_cli_stand_in\n"
        "launch.main()\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    env.pop("OPSGATE_OPTIMIZE", None)
    env.pop("PYTHONOPTIMIZE", None)
    done = subprocess.run(
        [sys.executable, "-c", script, "run", "--anything"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    # -OO on the command line: the environment, which builds and hooks inherit, stays as it was
    assert done.stdout.split("\n")[:2] == ["2 None ['run', '--anything']", "-OO"]
    env["OPSGATE_OPTIMIZE"] = "0"
    done = subprocess.run(
        [sys.executable, "-c", script, "run"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.split("\n")[:2] == ["0 None ['run']", "-c"]


def test_bytecode_counts_only_when_compiled_from_the_source_as_it_is_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade leaves the old optimized bytecode behind: that must not count as installed."""
    monkeypatch.syspath_prepend(str(tmp_path))
    source = tmp_path / "og_probe_module.py"
    source.write_text("ANSWER = 1\n")
    assert not launch._fresh_bytecode("og_probe_module")  # nothing compiled yet
    compiled = cache_from_source(str(source), optimization=launch.OPTIMIZE_LEVEL)
    py_compile.compile(str(source), cfile=compiled, optimize=launch.OPTIMIZE_LEVEL, doraise=True)
    assert launch._fresh_bytecode("og_probe_module")
    source.write_text("ANSWER = 22\n")  # upgraded: another size
    assert not launch._fresh_bytecode("og_probe_module")
    py_compile.compile(str(source), cfile=compiled, optimize=launch.OPTIMIZE_LEVEL, doraise=True)
    assert launch._fresh_bytecode("og_probe_module")
    stat = source.stat()
    os.utime(source, (stat.st_atime, stat.st_mtime + 10))  # same size, newer source
    assert not launch._fresh_bytecode("og_probe_module")
    assert not launch._fresh_bytecode("og_no_such_module")


def test_precompile_names_where_it_could_not_write(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """compileall itself runs in `make install` (and so before every CI run); here only what
    precompile says when a directory stayed without fresh bytecode, and what it asked for."""
    asked: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda argv, **_: asked.append(argv))
    monkeypatch.setattr(launch, "stale_probes", lambda: ["asyncio"])
    assert launch.precompile() == 1
    stdlib = str(Path(os.__file__).parent)
    assert f"could not write the optimized bytecode in {stdlib}:" in capsys.readouterr().err
    [argv] = asked
    assert argv[:4] == [sys.executable, "-OO", "-X", "no_debug_ranges"]
    assert stdlib in argv and str(REPO / "bot") in argv
    monkeypatch.setattr(launch, "stale_probes", list)
    assert launch.precompile() == 0
    assert "optimized bytecode written" in capsys.readouterr().out
