"""The `opsgate` command's first step, before anything heavy is imported.

`opsgate run` starts itself again under `python -OO` (the same process id) when optimized
bytecode is installed (`opsgate precompile`): docstrings then stay on disk, about 5 MiB less
memory for as long as the bot runs. Without that bytecode it runs as it is (each start would
compile every module). OPSGATE_OPTIMIZE=0 turns the restart off. The flag is on the command
line, not in the environment, so the commands opsgate runs (builds, hooks) do not inherit it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.util import MAGIC_NUMBER, cache_from_source, find_spec
from pathlib import Path

OPTIMIZE_LEVEL = 2
# Test suites and demos of the libraries opsgate never loads: compiling them is wasted time.
SKIPPED_DIRS = r"/(test|tests|idlelib|lib2to3|tkinter|turtledemo|ensurepip)/"
# The largest library, the standard library and opsgate: each must be precompiled, and since
# its last upgrade (an upgrade leaves the old bytecode behind, no longer matching the source,
# and rewrites every file). Top-level names: finding them imports nothing.
PROBES = ("telegram", "asyncio", "bot")


def optimized_bytecode_installed() -> bool:
    return not stale_probes()


def stale_probes() -> list[str]:
    return [module for module in PROBES if not _fresh_bytecode(module)]


def _source_of(module: str) -> Path | None:
    spec = find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _fresh_bytecode(module: str) -> bool:
    """Its optimized .pyc exists and was compiled from the source as it is now (the header
    Python itself checks: magic number, then the source's mtime and size)."""
    source = _source_of(module)
    if source is None:
        return False
    try:
        with Path(cache_from_source(str(source), optimization=OPTIMIZE_LEVEL)).open("rb") as f:
            header = f.read(16)
        stat = source.stat()
    except OSError:
        return False
    flags = int.from_bytes(header[4:8], "little")
    mtime, size = int.from_bytes(header[8:12], "little"), int.from_bytes(header[12:16], "little")
    return (
        header[:4] == MAGIC_NUMBER
        and flags == 0  # timestamp-based (hash-based pycs are not what compileall writes here)
        and mtime == int(stat.st_mtime) & 0xFFFFFFFF
        and size == stat.st_size & 0xFFFFFFFF
    )


def _directory_of(module: str) -> str:
    """Where the module lives: a package's parent directory, or a module's own."""
    source = _source_of(module)
    if source is None:
        return module
    return str(source.parent.parent if source.name == "__init__.py" else source.parent)


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
    import subprocess  # here, not at the top: the launcher's own start stays light

    argv = [sys.executable, "-OO", "-X", "no_debug_ranges", "-m", "compileall", "-q"]
    argv += ["-j", "0", "-x", SKIPPED_DIRS, *precompile_dirs()]
    # compileall fails on any file it cannot compile (some packages ship Python 2 examples):
    # what counts is whether opsgate's modules have their bytecode.
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=False)
    if stale := stale_probes():
        where = ", ".join(_directory_of(module) for module in stale)
        print(
            f"could not write the optimized bytecode in {where}: run it as a user who may"
            " write there (`opsgate run` runs without -OO until then)",
            file=sys.stderr,
        )
        return 1
    print(f"optimized bytecode written: `opsgate run` uses it (environment {sys.prefix})")
    return 0


def main() -> None:
    if wants_optimized_restart(sys.argv[1:]):
        # The same interpreter and arguments, with -OO in front; nothing user-given is in them.
        argv = [sys.executable, "-OO", *sys.orig_argv[1:]]
        try:
            os.execv(sys.executable, argv)  # noqa: S606
        except OSError as exc:  # then it runs as it is: memory, not function, is at stake
            print(f"could not restart under -OO ({exc.strerror}): running without", file=sys.stderr)
    from bot.cli import main as cli_main

    sys.exit(cli_main())
