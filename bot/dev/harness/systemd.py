"""A real systemd for the tests, in private PID + mount namespaces (recipe: systemd-sandbox.md).

`booted()` starts `unshare --pid --mount --fork --mount-proc` in a new session; the forked
PID 1 runs this file with `--inside`, which makes the mounts private, puts tmpfs on /run,
/tmp and /var/tmp, binds our unit dir on /etc/systemd/system, masks every unit that would
touch the shared machine and execs systemd. Without the tmpfs mounts and masks,
systemd-tmpfiles-setup would empty the machine's /tmp: never skip that step.

From outside, commands run inside with `nsenter -t PID -m -p` (the sandbox's PrefixHost).
The network namespace is shared, so services inside listen on the machine's loopback.
SIGKILL to systemd ends the namespace and every process in it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.dev import demo_web
from services.control.systemd import quote_exec
from services.hosts.runner import PrefixHost

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
# Outside /tmp, /run and /var/tmp: those are private tmpfs inside the sandbox.
WORK_ROOT = REPO / ".pytest-work"
SYSTEMD = "/lib/systemd/systemd"
UNIT_DIR_INSIDE = "/etc/systemd/system"
PARKING = "/mnt"  # an empty mount point outside the private tmpfs dirs
BOOT_TIMEOUT = 30.0
UNSHARE = ("unshare", "--pid", "--mount", "--fork", "--mount-proc")

MASKED = (
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-remount-fs.service",
    "systemd-sysctl.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-modules-load.service",
    "systemd-sysusers.service",
    "systemd-update-utmp.service",
    "systemd-journal-flush.service",
    "systemd-random-seed.service",
    "getty.target",
    "console-getty.service",
    "systemd-logind.service",
    "systemd-timesyncd.service",
)
SANDBOX_TARGET = """[Unit]
Description=opsgate test sandbox
Requires=basic.target
After=basic.target
"""


@dataclass(frozen=True)
class SystemdSandbox:
    pid: int  # systemd, PID 1 inside
    unit_dir: Path  # seen inside as /etc/systemd/system
    work_dir: Path  # for files the units use; visible inside at the same path
    host: PrefixHost  # runs argv inside: nsenter -t PID -m -p ...
    state: str  # "running" or "degraded", as `systemctl is-system-running` said
    failed_units: tuple[str, ...]  # why it is degraded, if it is
    log_path: Path


def unavailable_reason() -> str | None:
    """Why this machine cannot boot the sandbox, or None when it can."""
    if os.geteuid() != 0:
        return "systemd sandbox needs root (unshare of PID and mount namespaces)"
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"systemd sandbox needs {tool!r} on PATH"
    if not os.access(SYSTEMD, os.X_OK):
        return f"systemd sandbox needs {SYSTEMD}"
    probe = subprocess.run(
        [*UNSHARE, "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"unshare of PID and mount namespaces is not permitted: {probe.stderr.strip()}"
    return None


def _child_of(parent: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        if int(stat.rpartition(")")[2].split()[1]) == parent:
            return int(entry.name)
    return None


def _is_systemd(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe").endswith("/systemd")
    except OSError:
        return False


def _listening(pid: int) -> bool:
    return Path(f"/proc/{pid}/root/run/systemd/private").exists()


def _wait_for_systemd(unshare: subprocess.Popen[bytes], log_path: Path) -> int:
    deadline = BOOT_TIMEOUT
    while deadline > 0:
        if unshare.poll() is not None:
            break
        child = _child_of(unshare.pid)
        # systemctl needs systemd's private socket, which appears a moment after exec.
        if child is not None and _is_systemd(child) and _listening(child):
            return child
        time.sleep(0.05)  # fixture code, before any event loop: blocking is fine here
        deadline -= 0.05
    raise RuntimeError(f"systemd sandbox did not start; log:\n{log_path.read_text()[-3000:]}")


def _nsenter(pid: int) -> list[str]:
    return ["nsenter", "-t", str(pid), "-m", "-p"]


def boot(base: Path) -> tuple[SystemdSandbox, subprocess.Popen[bytes]]:
    unit_dir, work_dir = base / "units", base / "work"
    for directory in (unit_dir, work_dir):
        directory.mkdir(parents=True, exist_ok=True)
    log_path = base / "boot.log"
    with log_path.open("wb") as log_file:
        unshare = subprocess.Popen(
            [*UNSHARE, sys.executable, str(Path(__file__).resolve()), "--inside", str(unit_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # setsid: no controlling terminal, own process group
        )
    try:
        pid = _wait_for_systemd(unshare, log_path)
        ready = subprocess.run(
            [*_nsenter(pid), "systemctl", "is-system-running", "--wait"],
            capture_output=True,
            text=True,
            timeout=BOOT_TIMEOUT,
            check=False,
        )
        state = ready.stdout.strip()
        if state not in ("running", "degraded"):
            raise RuntimeError(f"systemd sandbox is {state!r}: {ready.stderr.strip()}")
        failed = subprocess.run(
            [*_nsenter(pid), "systemctl", "list-units", "--failed", "--plain", "--no-legend"],
            capture_output=True,
            text=True,
            check=False,
        )
    except BaseException:
        _kill(unshare)
        raise
    failed_units = tuple(line.split()[0] for line in failed.stdout.splitlines() if line.strip())
    log.info("systemd sandbox pid %d is %s (failed: %s)", pid, state, failed_units or "none")
    host = PrefixHost(prefix=_nsenter(pid), name="systemd-sandbox")
    sandbox = SystemdSandbox(pid, unit_dir, work_dir, host, state, failed_units, log_path)
    return sandbox, unshare


def _kill(unshare: subprocess.Popen[bytes]) -> None:
    child = _child_of(unshare.pid)
    if child is not None:
        # PID 1 of the namespace: its death takes every process inside with it.
        os.kill(child, signal.SIGKILL)
    unshare.kill()
    unshare.wait(timeout=10)


@contextmanager
def booted() -> Iterator[SystemdSandbox]:
    """Boot once, yield, SIGKILL. Skips when impossible; under CI=true fails instead."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the systemd tests: {reason}", pytrace=False)
        pytest.skip(reason)
    base = WORK_ROOT / f"systemd-{os.getpid()}"  # per session: parallel runs stay apart
    shutil.rmtree(base, ignore_errors=True)
    try:
        sandbox, unshare = boot(base)
        try:
            yield sandbox
        finally:
            _kill(unshare)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def inside(unit_dir: str) -> None:
    """PID 1 of the new namespaces: isolate, mask, exec systemd. Never returns."""
    if os.getpid() != 1:  # run by hand, it would mount over the machine's own /tmp and /run
        sys.exit("--inside runs only as PID 1 of a new PID namespace (see booted())")

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True)

    run("mount", "--make-rprivate", "/")
    # A checkout under /tmp (a CI clone, say) would vanish under the tmpfs, and with it the
    # venv and files the units run: park it on /mnt and move it back on top of the tmpfs.
    private = ("/run", "/tmp", "/var/tmp")
    keep_repo = any(REPO.is_relative_to(path) for path in private)
    if keep_repo:
        run("mount", "--rbind", str(REPO), PARKING)
    for path in private:
        run("mount", "-t", "tmpfs", "tmpfs", path)
    if keep_repo:
        REPO.mkdir(parents=True, exist_ok=True)
        run("mount", "--move", PARKING, str(REPO))
    run("mount", "--bind", unit_dir, UNIT_DIR_INSIDE)
    runtime_units = Path("/run/systemd/system")
    runtime_units.mkdir(parents=True)
    for unit in MASKED:
        (runtime_units / unit).symlink_to("/dev/null")
    (runtime_units / "sandbox.target").write_text(SANDBOX_TARGET)
    env = {"container": "sandbox", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"}
    os.execve(SYSTEMD, [SYSTEMD, "--system", "--unit=sandbox.target"], env)


if __name__ == "__main__" and sys.argv[1:2] == ["--inside"]:
    inside(sys.argv[2])


DEMO_SERVICE = [sys.executable, str(Path(demo_web.__file__).resolve())]


def service_unit(
    *args: str, kind: str = "notify", service: Sequence[str] = (), unit: Sequence[str] = ()
) -> str:
    """A unit for bot/dev/demo_web.py; Type=notify: started means listening."""
    exec_start = f"ExecStart={quote_exec([*DEMO_SERVICE, *args])}"
    head = ["[Unit]", "Description=opsgate test service", *unit]
    return "\n".join([*head, "[Service]", f"Type={kind}", exec_start, *service])
