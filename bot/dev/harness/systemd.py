"""A real systemd for the tests, in private PID + mount namespaces (recipe: systemd-sandbox.md).

`booted()` starts `unshare --pid --mount --fork --mount-proc` in a new session; the forked
PID 1 runs this file with `--inside`, which makes the mounts private, puts tmpfs on /run,
/tmp and /var/tmp, binds our unit dir on /etc/systemd/system, masks every unit that would
touch the shared machine and execs systemd. Without the tmpfs mounts and masks,
systemd-tmpfiles-setup would empty the machine's /tmp: never skip that step.

From outside, commands run inside with `nsenter -t PID -m -p` (the sandbox's PrefixHost).
The network namespace is shared, so services inside listen on the machine's loopback.
SIGKILL to systemd ends the namespace and every process in it.

The cgroup tree is shared too (no cgroup namespace), so PID 1 first moves into a cgroup of its
own (`opsgate-sandbox-...`, in every hierarchy): systemd takes it as its root, and units of the
same name in two sandboxes no longer share, create and remove one cgroup (status 219).
`binds` give a sandbox private dirs or files (an outside dir on /srv, say) on the shared disk.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
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
PRIVATE_DIRS = ("/run", "/tmp", "/var/tmp")  # tmpfs inside
CGROUP_PREFIX = "opsgate-sandbox-"
CGROUP_RECORD = "cgroups"  # in the sandbox's base: the cgroup dirs PID 1 made, one a line
CGROUP_EMPTY_TIMEOUT = 5.0

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
    binds: tuple[tuple[Path, str], ...] = ()  # (outside dir or file, where it is inside)


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


Bind = tuple[Path, str]


def _check_binds(binds: Sequence[Bind]) -> tuple[Bind, ...]:
    for source, target in binds:
        # Binds are made before the tmpfs mounts, which would hide one inside them; the target
        # must exist already, so that booting creates nothing on the shared disk.
        hidden = target == UNIT_DIR_INSIDE or any(
            Path(target).is_relative_to(path) for path in PRIVATE_DIRS
        )
        if not Path(target).is_absolute() or hidden:
            raise ValueError(f"bind target must be outside {PRIVATE_DIRS}: {target}")
        kinds = [(path.is_dir(), path.is_file()) for path in (source, Path(target))]
        if kinds[0] != kinds[1] or kinds[0] == (False, False):
            raise ValueError(f"bind {source} -> {target}: both must exist, dirs or files")
    return tuple((source.resolve(), target) for source, target in binds)


def boot(
    base: Path, *, binds: Sequence[Bind] = (), name: str = "systemd-sandbox"
) -> tuple[SystemdSandbox, subprocess.Popen[bytes]]:
    """Boot a sandbox with its files under `base`; `binds` mount outside dirs inside it."""
    unit_dir, work_dir = base / "units", base / "work"
    for directory in (unit_dir, work_dir):
        directory.mkdir(parents=True, exist_ok=True)
    binds = _check_binds(binds)
    log_path = base / "boot.log"
    record = base / CGROUP_RECORD
    argv = [*UNSHARE, sys.executable, str(Path(__file__).resolve()), "--inside", str(unit_dir)]
    argv += ["--cgroup", f"{CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}", str(record)]
    for source, target in binds:
        argv += ["--bind", str(source), target]
    with log_path.open("wb") as log_file:
        unshare = subprocess.Popen(
            argv,
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
        kill(unshare, base)
        raise
    failed_units = tuple(line.split()[0] for line in failed.stdout.splitlines() if line.strip())
    log.info("systemd sandbox pid %d is %s (failed: %s)", pid, state, failed_units or "none")
    host = PrefixHost(prefix=_nsenter(pid), name=name)
    sandbox = SystemdSandbox(
        pid, unit_dir, work_dir, host, state, failed_units, log_path, binds=binds
    )
    return sandbox, unshare


def kill(unshare: subprocess.Popen[bytes], base: Path) -> None:
    """SIGKILL the sandbox booted under `base`, then remove the cgroups it made."""
    _kill(unshare)
    _remove_cgroups(base / CGROUP_RECORD)


def _kill(unshare: subprocess.Popen[bytes]) -> None:
    child = _child_of(unshare.pid)
    if child is not None:
        # PID 1 of the namespace: its death takes every process inside with it.
        os.kill(child, signal.SIGKILL)
    unshare.kill()
    unshare.wait(timeout=10)


def _remove_cgroups(record: Path) -> None:
    try:
        tops = [Path(line) for line in record.read_text().splitlines() if line]
    except OSError:
        return
    # A cgroup can only be removed once empty, children first; the last processes of the
    # killed namespace may take a moment to leave it.
    deadline = time.monotonic() + CGROUP_EMPTY_TIMEOUT
    while True:
        for top in tops:
            for directory, _, _ in os.walk(top, topdown=False):
                with suppress(OSError):
                    os.rmdir(directory)
        tops = [top for top in tops if top.exists()]
        if not tops or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if tops:
        log.warning("sandbox cgroups left behind: %s", ", ".join(map(str, tops)))


@contextmanager
def booted(
    *, base: Path | None = None, binds: Sequence[Bind] = (), name: str = "systemd-sandbox"
) -> Iterator[SystemdSandbox]:
    """Boot once, yield, SIGKILL. Skips when impossible; under CI=true fails instead.

    `base` (default: per process under WORK_ROOT) is emptied before and removed after."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the systemd tests: {reason}", pytrace=False)
        pytest.skip(reason)
    if base is None:
        base = WORK_ROOT / f"systemd-{os.getpid()}"  # per session: parallel runs stay apart
    shutil.rmtree(base, ignore_errors=True)
    try:
        sandbox, unshare = boot(base, binds=binds, name=name)
        try:
            yield sandbox
        finally:
            kill(unshare, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _cgroup_dirs(path: str) -> list[Path]:
    """Where cgroup `path` is in every cgroup hierarchy mounted here (v1 and v2)."""
    dirs: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, system = line.partition(" - ")
        mount_root, mount_point = fields.split()[3:5]
        fstype, _, options = system.split()[:3]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        # One entry per hierarchy (a hierarchy may be mounted twice): its options say which.
        key = (
            "" if fstype == "cgroup2" else ",".join(sorted(set(options.split(",")) - {"rw", "ro"}))
        )
        if key not in dirs and Path(path).is_relative_to(mount_root):
            dirs[key] = Path(mount_point) / Path(path).relative_to(mount_root)
    return list(dirs.values())


def _enter_own_cgroup(name: str, record: Path) -> None:
    """Move this process into cgroup ROOT/`name` in every hierarchy (best effort: logged)."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    paths = {controllers: path for _, controllers, path in (x.split(":", 2) for x in lines)}
    # systemd takes its name=systemd path (v2: its only path) as its root in every hierarchy,
    # and makes its units' cgroups under that same path in each: so use it everywhere.
    root = paths.get("name=systemd", paths.get("", "/"))
    made: list[Path] = []
    for parent in _cgroup_dirs(root):
        own = parent / name
        try:
            own.mkdir()
            made.append(own)
            record.write_text("".join(f"{d}\n" for d in made))  # before anything can fail
            for key in ("cpuset.cpus", "cpuset.mems"):  # a v1 cpuset starts empty: no tasks
                if (own / key).exists() and not (own / key).read_text().strip():
                    (own / key).write_text((parent / key).read_text())
            (own / "cgroup.procs").write_text("0")  # 0: the writing task itself
        except OSError as exc:
            print(f"sandbox: not in a cgroup of its own in {parent}: {exc}", flush=True)


def inside(
    unit_dir: str,
    *,
    cgroup: str | None = None,
    cgroup_record: str | None = None,
    binds: Sequence[tuple[str, str]] = (),
) -> None:
    """PID 1 of the new namespaces: isolate, mask, exec systemd. Never returns."""
    if os.getpid() != 1:  # run by hand, it would mount over the machine's own /tmp and /run
        sys.exit("--inside runs only as PID 1 of a new PID namespace (see booted())")

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True)

    if cgroup is not None and cgroup_record is not None:
        _enter_own_cgroup(cgroup, Path(cgroup_record))
    run("mount", "--make-rprivate", "/")
    for source, target in binds:  # before the tmpfs mounts: a source under /tmp still works
        run("mount", "--bind", source, target)
    # A checkout under /tmp (a CI clone, say) would vanish under the tmpfs, and with it the
    # venv and files the units run: park it on /mnt and move it back on top of the tmpfs.
    keep_repo = any(REPO.is_relative_to(path) for path in PRIVATE_DIRS)
    if keep_repo:
        run("mount", "--rbind", str(REPO), PARKING)
    for path in PRIVATE_DIRS:
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


def _main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description="PID 1 of a systemd sandbox (see booted())")
    parser.add_argument("--inside", required=True, metavar="UNIT_DIR")
    parser.add_argument("--cgroup", nargs=2, metavar=("NAME", "RECORD"))
    parser.add_argument("--bind", nargs=2, action="append", default=[], metavar=("SRC", "DST"))
    args = parser.parse_args(argv)
    name, record = args.cgroup or (None, None)
    inside(args.inside, cgroup=name, cgroup_record=record, binds=[tuple(b) for b in args.bind])


if __name__ == "__main__" and sys.argv[1:2] == ["--inside"]:
    _main(sys.argv[1:])


DEMO_SERVICE = [sys.executable, str(Path(demo_web.__file__).resolve())]


def service_unit(
    *args: str, kind: str = "notify", service: Sequence[str] = (), unit: Sequence[str] = ()
) -> str:
    """A unit for bot/dev/demo_web.py; Type=notify: started means listening."""
    exec_start = f"ExecStart={quote_exec([*DEMO_SERVICE, *args])}"
    head = ["[Unit]", "Description=opsgate test service", *unit]
    return "\n".join([*head, "[Service]", f"Type={kind}", exec_start, *service])
