"""The hosts of the ops file by name: "local" always, others local, prefixed or over ssh."""

from __future__ import annotations

from collections.abc import Mapping

from config.inventory import LOCAL_HOST, HostConfig
from services.errors import OpsgateError
from services.hosts.runner import Host, LocalHost, PrefixHost, SupportsAclose
from services.hosts.ssh import SshHost


class UnknownHostError(OpsgateError, KeyError):
    """A host name that is neither "local" nor configured."""

    kind = "not_found"


class Hosts:
    """Name -> Host. "local" is always present; hosts holding connections close together."""

    def __init__(self, hosts: Mapping[str, Host] | None = None) -> None:
        self._hosts: dict[str, Host] = {LOCAL_HOST: LocalHost()}
        self._hosts.update(hosts or {})

    def get(self, name: str) -> Host:
        try:
            return self._hosts[name]
        except KeyError:
            raise UnknownHostError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._hosts

    def names(self) -> list[str]:
        return sorted(self._hosts)

    async def aclose(self) -> None:
        for host in self._hosts.values():
            if isinstance(host, SupportsAclose):
                await host.aclose()


def host_from_config(name: str, config: HostConfig, *, control_dir: str | None = None) -> Host:
    """Build a host; `control_dir` (short, private) enables ssh multiplexing where allowed."""
    host: Host
    if config.address is None:
        host = LocalHost(name)
    else:
        destination = f"{config.user}@{config.address}" if config.user else config.address
        options = {"StrictHostKeyChecking": "accept-new" if config.accept_new_host_keys else "yes"}
        if config.known_hosts_file is not None:
            options["UserKnownHostsFile"] = config.known_hosts_file
        host = SshHost(
            destination,
            name=name,
            port=config.port,
            identity_file=config.identity_file,
            options=options,
            connect_timeout_s=config.connect_timeout_s,
            control_dir=control_dir if config.multiplex else None,
        )
    return PrefixHost(config.prefix, host, name) if config.prefix else host


def hosts_from_config(
    configs: Mapping[str, HostConfig], *, control_dir: str | None = None
) -> Hosts:
    return Hosts(
        {name: host_from_config(name, c, control_dir=control_dir) for name, c in configs.items()}
    )
