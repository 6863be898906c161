"""The `opsgate` command's first step, before anything heavy is imported.

`opsgate run` starts itself again under `python -OO` (the same process id) when optimized
bytecode is installed (`opsgate precompile`): docstrings then stay on disk, about 5 MiB less
memory for as long as the bot runs. Without that bytecode it runs as it is (each start would
compile every module). OPSGATE_OPTIMIZE=0 turns the restart off. The flag is on the command
line, not in the environment, so the commands opsgate runs (builds, hooks) do not inherit it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from importlib.util import cache_from_source, find_spec
from pathlib import Path

OPTIMIZE_LEVEL = 2
# Test suites and demos of the libraries opsgate never loads: compiling them is wasted time.
SKIPPED_DIRS = r"/(test|tests|idlelib|lib2to3|tkinter|turtledemo|ensurepip)/"
# The largest library, and the standard library: both must be precompiled.
PROBES = ("telegram", "asyncio")


def optimized_bytecode_installed() -> bool:
    for module in PROBES:
        spec = find_spec(module)
        if spec is None or spec.origin is None:
            return False
        if not Path(cache_from_source(spec.origin, optimization=OPTIMIZE_LEVEL)).exists():
            return False
    return True


def wants_optimized_restart(argv: Sequence[str]) -> bool:
    return (
        list(argv[:1]) == ["run"]
        and not {"-h", "--help"} & set(argv)
        and sys.flags.optimize == 0
        and os.environ.get("OPSGATE_OPTIMIZE", "1") != "0"
        and optimized_bytecode_installed()
    )


def precompile_dirs() -> list[str]:
    """Where the modules of `opsgate run` come from: the standard library, the environment's
    packages (the libraries opsgate imports only when used, too), and opsgate itself."""
    import sysconfig

    paths = sysconfig.get_paths()
    own = Path(__file__).resolve().parents[1]
    found = [paths["stdlib"], paths["purelib"], paths["platlib"]]
    found += [str(own / package) for package in ("bot", "services", "handlers", "config")]
    return list(dict.fromkeys(path for path in found if Path(path).is_dir()))


def precompile() -> int:
    """Write the optimized bytecode `opsgate run` uses (without column tables, which only
    tracebacks' carets read). Needs write access to the environment: run it after installing."""
    argv = [sys.executable, "-OO", "-X", "no_debug_ranges", "-m", "compileall", "-q"]
    argv += ["-j", "0", "-x", SKIPPED_DIRS, *precompile_dirs()]
    # compileall fails on any file it cannot compile (some packages ship Python 2 examples):
    # what counts is whether opsgate's modules have their bytecode.
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=False)
    if not optimized_bytecode_installed():
        print(
            "could not write the optimized bytecode: run as a user who may write to the"
            f" Python environment ({sys.prefix})",
            file=sys.stderr,
        )
        return 1
    print(f"optimized bytecode written: `opsgate run` uses it (environment {sys.prefix})")
    return 0


def main() -> None:
    if wants_optimized_restart(sys.argv[1:]):
        # The same interpreter and arguments, with -OO in front; nothing user-given is in them.
        argv = [sys.executable, "-OO", *sys.orig_argv[1:]]
        os.execv(sys.executable, argv)  # noqa: S606
    from bot.cli import main as cli_main

    sys.exit(cli_main())
