"""LocalHost and PrefixHost with real processes; CommandResult and the argv/env guards."""

from __future__ import annotations

import asyncio
import os
import resource
from pathlib import Path

import pytest

from bot.dev.harness.systemd import SystemdSandbox
from services.hosts.runner import (
    CommandResult,
    LocalHost,
    PrefixHost,
    env_command,
    validate_argv,
    validate_env,
)

SH = "/bin/sh"


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (PID 1 here may not reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def wait_for_file(path: Path) -> str:
    for _ in range(500):
        if path.exists() and path.read_text().strip():
            return path.read_text()
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


@pytest.mark.parametrize(
    "argv",
    [
        "echo hi",  # a string is exactly what must never be accepted
        b"echo",
        [],
        ["echo", 1],
        ["echo", "a\0b"],
        [""],
        ["-rf"],
        None,
    ],
)
def test_validate_argv_rejects(argv: object) -> None:
    with pytest.raises(ValueError):
        validate_argv(argv)  # type: ignore[arg-type]


def test_validate_argv_accepts_any_sequence_and_returns_a_tuple() -> None:
    assert validate_argv(["echo", "", "-n", "a b"]) == ("echo", "", "-n", "a b")
    assert validate_argv(("true",)) == ("true",)


@pytest.mark.parametrize("name", ["", "1A", "A-B", "A=B", "A B", "é", "A\0"])
def test_validate_env_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        validate_env({name: "x"})


def test_validate_env_rejects_nul_values_and_env_command() -> None:
    with pytest.raises(ValueError):
        validate_env({"A": "x\0y"})
    assert env_command(("ls", "-l"), {"A": "1", "B_2": "x y"}) == [
        "env", "--", "A=1", "B_2=x y", "ls", "-l"
    ]  # fmt: skip
    with pytest.raises(ValueError):
        env_command(("a=b",), {})


def test_result_tail_summary_and_ok() -> None:
    lines = "\n".join(f"line {i}" for i in range(30)) + "\n"
    failed = CommandResult(("x",), 3, "out\n", lines, 0.5)
    assert not failed.ok
    assert failed.tail(2) == "line 28\nline 29"
    assert failed.tail().count("\n") == 19
    assert failed.summary == "exit status 3 on local"
    quiet = CommandResult(("x",), 0, "a\nb\n", "  \n", 0.1)
    assert quiet.ok and quiet.tail(1) == "b"
    assert CommandResult(("x",), 0, "", "", 2.0, timed_out=True).summary.startswith("timed out")
    assert "SIGKILL" in CommandResult(("x",), -9, "", "", 0.1).summary


async def test_exit_status_and_streams_pass_through() -> None:
    result = await LocalHost().run([SH, "-c", "echo out; echo err >&2; printf '\\377'; exit 3"])
    assert result.exit_status == 3 and not result.ok
    assert result.stdout == "out\n\ufffd"  # undecodable bytes are replaced, not an error
    assert result.stderr == "err\n"
    assert result.argv == (SH, "-c", "echo out; echo err >&2; printf '\\377'; exit 3")
    assert not result.timed_out and not result.truncated
    assert (await LocalHost().run(["true"])).ok


async def test_death_by_signal_is_a_negative_status() -> None:
    result = await LocalHost().run([SH, "-c", "kill -TERM $$"])
    assert result.exit_status == -15
    assert result.summary == "killed by SIGTERM on local"


async def test_missing_program_and_bad_cwd_are_results(tmp_path: Path) -> None:
    missing = await LocalHost().run(["opsgate-no-such-program", "x"])
    assert missing.exit_status == 127
    assert "opsgate-no-such-program: command not found" in missing.stderr
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    denied = await LocalHost().run([str(script)])
    assert denied.exit_status == 126 and "cannot run" in denied.stderr
    nowhere = await LocalHost().run(["true"], cwd=str(tmp_path / "gone"))
    assert nowhere.exit_status == 126 and "cannot change directory" in nowhere.stderr


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"echo started; sleep 60 & echo $! > {pids}; sleep 60"
    result = await LocalHost().run([SH, "-c", script], timeout=0.5)
    assert result.timed_out and not result.ok
    assert result.exit_status == -15
    assert result.stdout == "started\n"  # output before the deadline is kept
    grandchild = int(pids.read_text())
    for _ in range(200):  # SIGTERM was sent; give the kernel a moment to finish it
        if not alive(grandchild):
            break
        await asyncio.sleep(0.01)
    assert not alive(grandchild)


async def test_a_group_ignoring_sigterm_gets_sigkill() -> None:
    host = LocalHost(kill_grace_s=0.2)
    result = await host.run([SH, "-c", "trap '' TERM; echo ready; sleep 60"], timeout=0.5)
    assert result.timed_out
    assert result.exit_status == -9
    assert result.stdout == "ready\n"


async def test_cancelling_run_kills_the_process(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(LocalHost().run([SH, "-c", f"echo $$ > {pidfile}; exec sleep 60"]))
    pid = int(await wait_for_file(pidfile))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if not alive(pid):
            break
        await asyncio.sleep(0.01)
    assert not alive(pid)


async def test_huge_output_keeps_only_the_tail_in_bounded_memory() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    script = "head -c 300000000 /dev/zero; echo; echo the-end; head -c 3000000 /dev/zero >&2"
    result = await LocalHost().run([SH, "-c", script], output_limit=1000, timeout=60)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.ok and result.truncated
    assert len(result.stdout) == 1000
    assert result.stdout.endswith("\nthe-end\n")
    assert len(result.stderr) == 1000  # stderr was read at the same time, so nothing blocked
    assert after - before < 100_000  # 300 MB went through; far less than that was kept


async def test_cut_inside_a_utf8_character_leaves_no_replacement_char() -> None:
    # "é\n" is 3 bytes; keeping 101 of them starts the tail inside an "é".
    result = await LocalHost().run([SH, "-c", "yes é | head -n 1000"], output_limit=101)
    assert result.truncated
    assert "\ufffd" not in result.stdout
    assert result.stdout.endswith("é\né\n")


async def test_env_is_a_small_base_plus_what_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSGATE_TEST_SECRET", "token-123")
    result = await LocalHost().run(["env"], env={"RELEASE": "v2 'quoted'"})
    seen = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert "OPSGATE_TEST_SECRET" not in seen
    assert seen["RELEASE"] == "v2 'quoted'"
    assert seen["PATH"] and seen["LANG"]
    assert set(seen) <= {"RELEASE", "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"} | {
        "SSH_AUTH_SOCK",
        "PWD",
    }
    with pytest.raises(ValueError):
        await LocalHost().run(["env"], env={"BAD-NAME": "x"})


async def test_cwd_and_input(tmp_path: Path) -> None:
    assert (await LocalHost().run(["pwd"], cwd=str(tmp_path))).stdout == f"{tmp_path}\n"
    echoed = await LocalHost().run(["cat"], input=b"hello\x00world")
    assert echoed.stdout == "hello\x00world"
    ignored = await LocalHost().run(["true"], input=b"x" * 2_000_000)  # never read: no error
    assert ignored.ok


async def test_prefix_host_runs_behind_the_prefix() -> None:
    host = PrefixHost(["nice", "-n", "7"], name="niced")
    result = await host.run(["nice"])  # nice with no arguments prints its own niceness
    base = int((await LocalHost().run(["nice"])).stdout)
    assert int(result.stdout) == min(base + 7, 19)
    assert result.argv == ("nice",)  # the caller's argv, not the prefixed one
    assert result.host == "niced"


async def test_prefix_host_env_survives_a_prefix_that_clears_it(tmp_path: Path) -> None:
    host = PrefixHost(["env", "-i"])  # like sudo, which resets the environment
    result = await host.run(["/usr/bin/printenv", "A"], env={"A": "a b"}, cwd=str(tmp_path))
    assert result.stdout == "a b\n"
    assert (await host.run(["pwd"], cwd=str(tmp_path))).stdout == f"{tmp_path}\n"


async def test_prefix_host_with_nsenter() -> None:
    probe = await LocalHost().run(["nsenter", "-t", str(os.getpid()), "-m", "-p", "true"])
    if not probe.ok:
        pytest.skip(f"nsenter is not permitted here: {probe.tail(2)}")
    host = PrefixHost(["nsenter", "-t", str(os.getpid()), "-m", "-p"])
    result = await host.run(["/bin/sh", "-c", "exit 4"])
    assert result.exit_status == 4


def test_prefix_must_be_a_valid_argv() -> None:
    with pytest.raises(ValueError):
        PrefixHost([])
    with pytest.raises(ValueError):
        PrefixHost("sudo -n")


async def test_prefix_host_keeps_cwd_past_nsenter(systemd_sandbox: SystemdSandbox) -> None:
    # nsenter -m starts in the other namespace's root; the directory must be set after it.
    work = str(systemd_sandbox.work_dir)
    result = await systemd_sandbox.host.run(["pwd"], cwd=work)
    assert result.stdout == f"{work}\n"
    env_and_cwd = await systemd_sandbox.host.run(["printenv", "X"], cwd=work, env={"X": "1"})
    assert env_and_cwd.stdout == "1\n"
    missing = await systemd_sandbox.host.run(["pwd"], cwd=f"{work}/missing")
    assert not missing.ok
