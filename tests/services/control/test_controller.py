"""ServiceController without Telegram: unknown names, probes built from config, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bot.dev.harness.systemd import SystemdSandbox
from config.opsfile import parse_ops_text
from services.control.controller import ServiceController, UnknownService
from services.control.health import CommandCheck, HttpCheck, TcpCheck
from services.hosts.registry import Hosts, hosts_from_config
from services.progress import Progress, StepStatus

OPS = """
[environments.production]
[hosts.sandbox]
prefix = ["nsenter", "-t", "{pid}", "-m", "-p"]
[services.ghost]
environment = "production"
host = "sandbox"
unit = "t-ghost.service"
health = {{ command = ["true"] }}
[services.db]
environment = "production"
unit = "db.service"
health = {{ tcp = "[::1]:5432", timeout_s = 1 }}
[services.web]
environment = "production"
unit = "web.service"
health = {{ url = "http://127.0.0.1:1/health", expect_json = {{ status = "ok" }} }}
"""


@pytest.fixture
async def controller(systemd_sandbox: SystemdSandbox) -> AsyncIterator[ServiceController]:
    ops = parse_ops_text(OPS.format(pid=systemd_sandbox.pid))
    hosts: Hosts = hosts_from_config(ops.hosts)
    async with httpx.AsyncClient() as http:
        yield ServiceController(ops, hosts, http, start_timeout_s=5)
    await hosts.aclose()


async def test_unknown_service_names_the_known_ones(controller: ServiceController) -> None:
    with pytest.raises(UnknownService) as caught:
        await controller.state("nope")
    assert str(caught.value) == "unknown service 'nope' (known: db, ghost, web)"


def test_probes_follow_the_config(controller: ServiceController) -> None:
    web, db, ghost = (controller.health_check(n) for n in ("web", "db", "ghost"))
    assert isinstance(web, HttpCheck) and web.expect_json == {"status": "ok"}
    assert isinstance(db, TcpCheck) and (db.host, db.port, db.timeout_s) == ("::1", 5432, 1)
    assert isinstance(ghost, CommandCheck) and list(ghost.argv) == ["true"]


async def test_state_of_a_missing_unit_reports_the_error(controller: ServiceController) -> None:
    state = await controller.state("ghost")
    assert state.error == "unit t-ghost.service not found"
    assert state.running is False
    assert state.health is not None and state.health.ok  # `true` ran inside the sandbox


async def test_restart_of_a_missing_unit_fails_in_its_first_step(
    controller: ServiceController,
) -> None:
    progress = Progress()
    outcome = await controller.restart("ghost", progress)
    assert not outcome.ok
    assert outcome.error is not None and "t-ghost.service" in outcome.error
    assert [s.status for s in progress.steps] == [StepStatus.FAILED]
