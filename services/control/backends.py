"""systemd units and supervisord programs behind one small interface."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from config.inventory import Service
from services.control.supervisor import SupervisorManager
from services.control.systemd import SystemdManager, UnitStatus
from services.hosts.runner import Host


@dataclass(frozen=True)
class BackendStatus:
    state: str
    running: bool
    main_pid: int | None
    restarts: int | None
    since: datetime | None


class ServiceBackend(Protocol):
    async def status(self) -> BackendStatus: ...
    async def restart(self) -> None: ...
    async def clear_start_limit(self) -> bool: ...
    async def wait_running(self, timeout: float) -> BackendStatus: ...
    async def log_tail(self, lines: int) -> str: ...


class SystemdBackend:
    def __init__(self, manager: SystemdManager, unit: str) -> None:
        self._manager = manager
        self._unit = unit

    async def status(self) -> BackendStatus:
        return self._from_unit(await self._manager.show(self._unit))

    @staticmethod
    def _from_unit(unit: UnitStatus) -> BackendStatus:
        return BackendStatus(
            state=f"{unit.active_state}/{unit.sub_state}",
            running=unit.active,
            main_pid=unit.main_pid,
            restarts=unit.n_restarts,
            since=unit.active_enter_timestamp,
        )

    async def restart(self) -> None:
        await self._manager.restart(self._unit)

    async def clear_start_limit(self) -> bool:
        """`systemctl reset-failed`: systemd counts starts again from zero."""
        await self._manager.reset_failed(self._unit)
        return True

    async def wait_running(self, timeout: float) -> BackendStatus:
        return self._from_unit(await self._manager.wait_active(self._unit, timeout))

    async def log_tail(self, lines: int) -> str:
        return await self._manager.journal_tail(self._unit, lines)


class SupervisorBackend:
    def __init__(self, manager: SupervisorManager, program: str) -> None:
        self._manager = manager
        self._program = program

    async def status(self) -> BackendStatus:
        program = await self._manager.status(self._program)
        return BackendStatus(program.state.value, program.running, program.pid, None, None)

    async def restart(self) -> None:
        await self._manager.restart(self._program)

    async def clear_start_limit(self) -> bool:
        return False  # supervisord has no start limit of its own to clear

    async def wait_running(self, timeout: float) -> BackendStatus:
        await self._manager.wait_running(self._program, timeout)
        return await self.status()

    async def log_tail(self, lines: int) -> str:
        text = await self._manager.tail(self._program, nbytes=max(1600, lines * 200))
        return "\n".join(text.splitlines()[-lines:])


def backend_for(service: Service, host: Host) -> ServiceBackend:
    if service.manager == "supervisor":
        assert service.program is not None and service.supervisor_config is not None
        manager = SupervisorManager(
            host, service.supervisor_config, supervisorctl=service.supervisorctl
        )
        return SupervisorBackend(manager, service.program)
    assert service.unit is not None  # both guaranteed when the ops file was loaded
    return SystemdBackend(SystemdManager(host, user_mode=service.user_manager), service.unit)
