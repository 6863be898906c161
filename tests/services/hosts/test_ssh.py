"""SshHost and the registry: argv construction without sshd, then a real loopback sshd."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.dev.harness.sshd import (
    CLIENT_OPTIONS,
    Sshd,
    SshdUnavailable,
    free_port,
    sshd,
    start_sshd,
    unavailable,
)
from config.opsfile import HostConfig, parse_ops_text
from services.hosts.registry import Hosts, UnknownHostError, host_from_config, hosts_from_config
from services.hosts.runner import LocalHost, PrefixHost
from services.hosts.ssh import SshHost, remote_command
from tests.services.hosts.test_runner import alive

__all__ = ["sshd"]  # the fixture is used by name

# Arguments a shell would love to reinterpret; each must arrive byte-identical.
NASTY = [
    "plain", "two words", "", " ", "it's", '"double"', "back\\slash", "semi;colon",
    "$(touch /tmp/opsgate-pwned)", "`touch /tmp/opsgate-pwned`", "$HOME ${PATH}",
    "new\nline", "tab\there", "cr\rreturn", "*", "?", "~", "-n", "--", "-e", "a|b&c>d<e",
    "!bang", "#hash", "{a,b}", "unicodé ✓ 日本", "'", "''\"\"", "end\\",
]  # fmt: skip
PRINT_ARGS = ["/usr/bin/printf", "%s\\0"]  # printf writes a NUL after each argument


def split_nul(text: str) -> list[str]:
    assert text.endswith("\0")
    return text[:-1].split("\0")


def make_host(server: Sshd, **kwargs: object) -> SshHost:
    settings: dict[str, object] = {
        "name": "box",
        "port": server.port,
        "identity_file": server.identity_file,
        "options": CLIENT_OPTIONS,
        "config_file": "/dev/null",  # keep root's ~/.ssh/config out of the test
        **kwargs,
    }
    return SshHost(server.destination, **settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def box(sshd: Sshd) -> Iterator[SshHost]:
    """One multiplexed host for the module: a command then costs one round trip."""
    host = make_host(sshd, control_dir=str(sshd.directory), remote_timeout_margin_s=0.5)
    yield host
    subprocess.run(host.ssh_argv(control="exit"), capture_output=True, timeout=10, check=False)


# --- argv construction, no sshd -----------------------------------------------------------


def test_ssh_argv_defaults() -> None:
    assert SshHost("deploy@web1.example.com").ssh_argv("uptime") == [
        "ssh",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
        "-o", "LogLevel=ERROR",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=3",
        "-p", "22",
        "--", "deploy@web1.example.com",
        "uptime",
    ]  # fmt: skip


def test_ssh_argv_with_everything() -> None:
    host = SshHost(
        "10.0.0.5",
        port=2222,
        identity_file="/etc/opsgate/id",
        options={"StrictHostKeyChecking": "accept-new", "LogLevel": "QUIET"},
        connect_timeout_s=3,
        control_dir="/run/og",
        control_persist_s=30,
        config_file="/dev/null",
    )
    argv = host.ssh_argv("x")
    assert argv[:3] == ["ssh", "-F", "/dev/null"]
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert "ConnectTimeout=3" in options and "LogLevel=QUIET" in options
    assert "LogLevel=ERROR" not in options
    assert "StrictHostKeyChecking=accept-new" in options
    assert {"ControlMaster=auto", "ControlPath=/run/og/%C", "ControlPersist=30s"} <= set(options)
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-i") + 1] == "/etc/opsgate/id"
    assert argv[-3:] == ["--", "10.0.0.5", "x"]
    control = host.ssh_argv(control="check")
    assert control[-4:] == ["-O", "check", "--", "10.0.0.5"]


@pytest.mark.parametrize(
    "destination",
    ["", "-oProxyCommand=x", "root@-x", "a b", "host;rm", "Root@host", "u@h@h", "h:22", "h\n"],
)
def test_bad_destinations_are_refused(destination: str) -> None:
    with pytest.raises(ValueError):
        SshHost(destination)


@pytest.mark.parametrize("destination", ["root@127.0.0.1", "web-1.example.com", "deploy@::1"])
def test_good_destinations(destination: str) -> None:
    assert SshHost(destination).ssh_argv()[-1] == destination


@pytest.mark.parametrize(
    "options",
    [
        {"ProxyCommand": "nc x 22"},
        {"LocalCommand": "id"},
        {"ControlPath": "/tmp/x"},
        {"LogLevel": "ERROR ProxyCommand=x"},
        {"UserKnownHostsFile": "/a;b"},
    ],
)
def test_unsafe_options_are_refused(options: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        SshHost("h", options=options)


def test_control_dir_must_leave_room_for_the_socket_name() -> None:
    SshHost("h", control_dir="/" + "d" * 48)  # 49 + "/" + 40 = 90 bytes: the limit
    with pytest.raises(ValueError):
        SshHost("h", control_dir="/" + "d" * 49)


def test_remote_command_strings() -> None:
    assert remote_command(["echo", "a b"]) == "env -- echo 'a b'; exit $?"
    assert remote_command(["cd", "/"]) == "env -- cd /; exit $?"  # env runs it: never a builtin
    assert remote_command(["ls"], {"A": "x y"}, "/srv/my app") == (
        "cd -- '/srv/my app' || exit 126; env -- 'A=x y' ls; exit $?"
    )
    assert remote_command(["ls"], timeout=32.5) == "timeout -k 5 32.500 env -- ls; exit $?"
    assert remote_command(["ls"], timeout=0) == "timeout -k 5 0.001 env -- ls; exit $?"  # 0: never
    for bad_argv, env in ((["a=b"], None), (["ls"], {"A-B": "x"}), (["x\0"], None)):
        with pytest.raises(ValueError):
            remote_command(bad_argv, env)


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
async def test_remote_command_quoting_round_trips_in_local_shells(shell: str) -> None:
    result = await LocalHost().run([shell, "-c", remote_command([*PRINT_ARGS, *NASTY])])
    assert result.ok, result.stderr
    assert split_nul(result.stdout) == NASTY


def test_host_from_config_builds_each_kind() -> None:
    local = host_from_config("here", HostConfig())
    assert isinstance(local, LocalHost) and local.name == "here"
    sudo = host_from_config("root", HostConfig(prefix=["sudo", "-n"]))
    assert isinstance(sudo, PrefixHost) and sudo.prefix == ("sudo", "-n")
    config = HostConfig(address="10.0.0.5", user="deploy", known_hosts_file="/etc/kh")
    ssh = host_from_config("web1", config, control_dir="/run/og")
    assert isinstance(ssh, SshHost) and ssh.name == "web1"
    argv = ssh.ssh_argv()
    assert argv[-1] == "deploy@10.0.0.5"
    assert {"StrictHostKeyChecking=yes", "UserKnownHostsFile=/etc/kh"} <= set(argv)
    assert "ControlPath=/run/og/%C" in argv
    plain = HostConfig(address="h", multiplex=False, accept_new_host_keys=True)
    plain_argv = host_from_config("h", plain, control_dir="/run/og").ssh_argv()  # type: ignore[attr-defined]
    assert "StrictHostKeyChecking=accept-new" in plain_argv
    assert not any(a.startswith("Control") for a in plain_argv)
    wrapped = host_from_config("w", HostConfig(address="h", prefix=["sudo", "-n"]))
    assert isinstance(wrapped, PrefixHost) and isinstance(wrapped.inner, SshHost)


def test_hosts_registry_from_the_ops_file() -> None:
    config = parse_ops_text(
        '[hosts.web1]\naddress = "10.0.0.5"\n[hosts.box]\nprefix = ["sudo", "-n"]\n'
    )
    hosts = hosts_from_config(config.hosts)
    assert hosts.names() == ["box", "local", "web1"]
    assert "web1" in hosts and "db" not in hosts
    assert isinstance(hosts.get("local"), LocalHost)
    assert hosts.get("web1").name == "web1"
    with pytest.raises(UnknownHostError):
        hosts.get("db")
    assert isinstance(Hosts().get("local"), LocalHost)


# --- through a real sshd ---------------------------------------------------------------


async def test_exit_status_and_streams_pass_through(box: SshHost) -> None:
    result = await box.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 7"])
    assert result.exit_status == 7 and not result.ok
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    assert not result.connection_failed
    assert result.argv == ("/bin/sh", "-c", "echo out; echo err >&2; exit 7")
    assert result.host == "box"


async def test_nasty_arguments_arrive_byte_identical(box: SshHost) -> None:
    result = await box.run([*PRINT_ARGS, *NASTY])
    assert result.ok, result.stderr
    assert split_nul(result.stdout) == NASTY
    assert not Path("/tmp/opsgate-pwned").exists()


async def test_env_cwd_and_input_over_ssh(box: SshHost, sshd: Sshd) -> None:
    odd_dir = sshd.directory / "a b'c$(x)"
    odd_dir.mkdir(exist_ok=True)
    env = {"RELEASE": "v1 'x' $(y)", "EMPTY": ""}
    result = await box.run(["/usr/bin/printenv", "RELEASE", "EMPTY"], env=env, cwd=str(odd_dir))
    assert result.stdout == "v1 'x' $(y)\n\n"
    assert (await box.run(["/bin/pwd"], cwd=str(odd_dir))).stdout == f"{odd_dir}\n"
    assert (await box.run(["/bin/cat"], input=b"line\n\x00")).stdout == "line\n\x00"
    missing = await box.run(["/bin/true"], cwd=str(sshd.directory / "gone"))
    assert missing.exit_status == 126 and "gone" in missing.stderr


async def test_remote_failures_keep_their_meaning(box: SshHost) -> None:
    missing = await box.run(["opsgate-no-such-program"])
    assert missing.exit_status == 127 and not missing.connection_failed
    killed = await box.run(["/bin/sh", "-c", "kill -TERM $$"])
    assert killed.exit_status == 128 + 15  # not 255: the shell in front reports the signal
    assert not killed.connection_failed
    builtin = await box.run(["cd", "/"])  # env(1) runs programs, never shell builtins
    assert builtin.exit_status == 127


async def test_timeout_over_ssh_ends_the_remote_command_too(box: SshHost, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"  # the "remote" machine is this one, so the file is readable here
    script = f"echo $$ > {pidfile}; exec /bin/sleep 30"
    result = await box.run(["/bin/sh", "-c", script], timeout=1.0)
    assert result.timed_out and not result.connection_failed and not result.ok
    pid = int(pidfile.read_text())
    for _ in range(300):  # timeout(1) ends it remotely 0.5 s after the local deadline
        if not alive(pid):
            break
        await asyncio.sleep(0.01)
    assert not alive(pid)
    assert (await box.run(["/bin/true"])).ok  # the shared connection survived


async def test_wrong_port_is_a_clear_connection_failure(sshd: Sshd) -> None:
    host = make_host(sshd, port=free_port(), connect_timeout_s=5)
    result = await host.run(["/bin/true"])
    assert result.exit_status == 255 and result.connection_failed and not result.ok
    assert "Connection refused" in result.stderr
    assert result.summary == "ssh to box failed (exit 255)"


async def test_wrong_key_is_a_connection_failure(sshd: Sshd, tmp_path: Path) -> None:
    key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    result = await make_host(sshd, identity_file=str(key)).run(["/bin/true"])
    assert result.connection_failed
    assert "Permission denied" in result.stderr


async def test_prefix_over_ssh_and_closing_the_master(sshd: Sshd, tmp_path: Path) -> None:
    control_dir = Path(sshd.directory) / "cm2"
    control_dir.mkdir(exist_ok=True)
    ssh = make_host(sshd, control_dir=str(control_dir))
    host = PrefixHost(["env", "-i"], ssh)  # clears the environment, as sudo would
    result = await host.run(["/usr/bin/printenv", "A"], env={"A": "a b"})
    assert result.stdout == "a b\n" and result.host == "box"
    check = ssh.ssh_argv(control="check")
    assert (await LocalHost().run(check)).ok  # a master is running
    await Hosts({"box": host}).aclose()
    assert not (await LocalHost().run(check)).ok


def test_sshd_helper_skips_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SshdUnavailable):
        start_sshd(Path("/nonexistent/opsgate"))  # ssh-keygen cannot write there
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        unavailable("no sshd")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI=true: no sshd"):
        unavailable("no sshd")
