"""Hosts over OpenSSH.

`SshHost` runs the local `ssh` client through a `LocalHost`. sshd hands the remote command to
the user's login shell as one string (`$SHELL -c STRING`), so the argv is quoted with
`shlex.join`: exact for POSIX shells (bash, dash, zsh), not for csh or fish. The string is
`[cd -- DIR || exit 126;] timeout -k 5 T env -- [K=V...] PROGRAM ARGS...; exit $?`:
- env(1) runs the program itself, so no shell builtin, function or keyword can stand in for it;
- killing the local client does not stop a remote command (no tty, so no SIGHUP), so timeout(1)
  ends it remotely, a little after the local deadline (which therefore always fires first);
- the shell stays in front, so a remote death by signal N is exit 128+N, and 255 means ssh's
  own failure (or a program that exits 255 itself: the one ambiguity left).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace

from config.inventory import HOST_ADDRESS_PATTERN, SSH_USER_PATTERN
from config.strict import unanchored
from services.hosts.runner import (
    CommandResult,
    Host,
    LocalHost,
    env_command,
    validate_argv,
)

SSH_EXIT_FAILURE = 255
REMOTE_KILL_AFTER_S = 5  # timeout(1): SIGTERM at the deadline, SIGKILL this much later
# sun_path holds 108 bytes, and the master first binds ControlPath plus a 17-byte random suffix.
CONTROL_PATH_MAX = 90
_CONTROL_NAME = "%C"  # a 40-character hash of the connection
DESTINATION_PATTERN = (
    rf"^(?:{unanchored(SSH_USER_PATTERN)}@)?(?:{unanchored(HOST_ADDRESS_PATTERN)})\Z"
)
# Extra -o options a caller may set. Others (ProxyCommand, LocalCommand...) run local commands.
ALLOWED_OPTIONS = frozenset(
    {
        "AddressFamily",
        "CheckHostIP",
        "Compression",
        "ConnectionAttempts",
        "GlobalKnownHostsFile",
        "HostKeyAlias",
        "IdentitiesOnly",
        "LogLevel",
        "ProxyJump",
        "ServerAliveCountMax",
        "ServerAliveInterval",
        "StrictHostKeyChecking",
        "UserKnownHostsFile",
    }
)
OPTION_VALUE_PATTERN = r"^[A-Za-z0-9_.,:/@%+=-]{1,255}$"
DEFAULT_OPTIONS = {
    "LogLevel": "ERROR",  # keeps "Permanently added ..." warnings out of command stderr
    "ServerAliveInterval": "15",
    "ServerAliveCountMax": "3",
}


def remote_command(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
) -> str:
    """The one string the remote login shell runs; every argument arrives byte-identical."""
    command = shlex.join(env_command(validate_argv(argv), env))
    if timeout is not None and math.isfinite(timeout):
        command = f"timeout -k {REMOTE_KILL_AFTER_S:g} {max(timeout, 0.001):.3f} {command}"
    if cwd is not None:
        if not cwd or "\0" in cwd:
            raise ValueError("cwd must be a non-empty path without NUL")
        command = f"cd -- {shlex.quote(cwd)} || exit 126; {command}"
    return f"{command}; exit $?"


def check_options(options: Mapping[str, str]) -> dict[str, str]:
    for key, value in options.items():
        if key not in ALLOWED_OPTIONS:
            raise ValueError(f"ssh option not allowed: {key!r}")
        if re.fullmatch(OPTION_VALUE_PATTERN, value) is None:
            raise ValueError(f"ssh option {key} has an unsafe value: {value!r}")
    return dict(options)


class SshHost:
    """Runs argv on another machine with the OpenSSH client, non-interactively (BatchMode)."""

    def __init__(
        self,
        destination: str,
        *,
        name: str = "",
        port: int = 22,
        identity_file: str | None = None,
        options: Mapping[str, str] | None = None,
        connect_timeout_s: int = 10,
        control_dir: str | None = None,
        control_persist_s: int = 60,
        remote_timeout_margin_s: float | None = 2.0,
        config_file: str | None = None,
        local: Host | None = None,
    ) -> None:
        if re.fullmatch(DESTINATION_PATTERN, destination) is None:
            raise ValueError(f"not a valid ssh destination: {destination!r}")
        if not 1 <= port <= 65535:
            raise ValueError(f"not a valid port: {port}")
        if control_dir is not None and len(f"{control_dir}/") + 40 > CONTROL_PATH_MAX:
            raise ValueError(f"control_dir too long for a ControlPath socket: {control_dir!r}")
        self.destination = destination
        self.name = name or destination
        self.port = port
        self.identity_file = identity_file
        self.options = {**DEFAULT_OPTIONS, **check_options(options or {})}
        self.connect_timeout_s = connect_timeout_s
        self.control_dir = control_dir
        self.control_persist_s = control_persist_s
        # None: no timeout(1) wrapper, for remotes without coreutils (they may outlive a timeout).
        self.remote_timeout_margin_s = remote_timeout_margin_s
        self.config_file = config_file
        self.local: Host = local if local is not None else LocalHost(self.name)

    def ssh_argv(self, remote: str | None = None, *, control: str | None = None) -> list[str]:
        """The client argv: options, `--`, destination, then the remote string (or none)."""
        argv = ["ssh"]
        if self.config_file is not None:
            argv += ["-F", self.config_file]
        options = {
            "BatchMode": "yes",  # never prompt: there is nobody to answer
            "ConnectTimeout": str(self.connect_timeout_s),
            **self.options,
        }
        if self.control_dir is not None:
            options["ControlMaster"] = "auto"
            options["ControlPath"] = f"{self.control_dir}/{_CONTROL_NAME}"
            options["ControlPersist"] = f"{self.control_persist_s}s"
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        argv += ["-p", str(self.port)]
        if self.identity_file is not None:
            argv += ["-i", self.identity_file]
        if control is not None:
            argv += ["-O", control]
        argv += ["--", self.destination]  # after "--" nothing is read as an ssh option
        if remote is not None:
            argv.append(remote)
        return argv

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        input: bytes | None = None,
        output_limit: int = 64 * 1024,
    ) -> CommandResult:
        args = validate_argv(argv)
        margin = self.remote_timeout_margin_s
        remote_timeout = None if margin is None else timeout + margin
        ssh = self.ssh_argv(remote_command(args, env, cwd, remote_timeout))
        result = await self.local.run(ssh, timeout=timeout, input=input, output_limit=output_limit)
        failed = result.exit_status == SSH_EXIT_FAILURE and not result.timed_out
        return replace(result, argv=args, host=self.name, connection_failed=failed)

    async def aclose(self) -> None:
        """Stop the shared master connection, if one was started."""
        if self.control_dir is not None:
            await self.local.run(self.ssh_argv(control="exit"), timeout=10)
