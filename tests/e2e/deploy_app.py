"""A git-deployed test app as a real systemd unit, shared by the deploy end-to-end tests.

    async with installed_app(systemd_sandbox, base) as app:   # t-deploy.service, not started
        ops_file.write_text(PEOPLE_AND_CHATS + app_ops_text(systemd_sandbox, app))

The unit runs ROOT/current/app.py; the repository has v1, v2 (healthy) and v3 (unhealthy).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.dev import demo_web
from bot.dev.harness.gitrepo import AppRepo, app_argv, make_app_repo
from bot.dev.harness.systemd import SystemdSandbox
from services.control.systemd import SystemdManager, quote_exec
from tests.e2e.conftest import OPS_TEXT

UNIT = "t-deploy.service"

# carol is an admin here too, so that an admin's own request meets the requester rule.
PEOPLE_AND_CHATS = OPS_TEXT.split("[environments.production]")[0].replace(
    "admin = [1001]", "admin = [1001, 1003]"
)


@dataclass(frozen=True)
class DeployApp:
    root: Path  # ROOT: releases/, current, previous
    port: int  # the app's HTTP port on loopback
    repo: AppRepo


@asynccontextmanager
async def installed_app(systemd_sandbox: SystemdSandbox, base: Path) -> AsyncIterator[DeployApp]:
    """Install t-deploy.service (ROOT/current/app.py) and its repository under `base`;
    stop and remove the unit afterwards."""
    repo = make_app_repo(base / "repo")
    root = base / "app"
    port = demo_web.free_port()
    manager = SystemdManager(systemd_sandbox.host)
    argv = app_argv(root / "current", port, python=sys.executable)
    unit = "\n".join(
        [
            "[Unit]",
            "Description=deploy test app",
            "StartLimitIntervalSec=0",
            "[Service]",
            "Type=notify",
            f"ExecStart={quote_exec(argv)}",
        ]
    )
    await manager.install_unit(UNIT, unit)
    try:
        yield DeployApp(root, port, repo)
    finally:
        await manager.stop(UNIT)
        await manager.remove_unit(UNIT)


def app_ops_text(
    systemd_sandbox: SystemdSandbox,
    app: DeployApp,
    *,
    requires_approval: bool = True,
    deploy_extra: str = "watch_s = 0.5\nwatch_interval_s = 0.1\n",
) -> str:
    """Environments, the sandbox host and [services.app] (in staging) for an ops file;
    `deploy_extra` is appended to [services.app.deploy] (a table may follow it)."""
    return f"""
[environments.production]
[environments.staging]
requires_approval = {str(requires_approval).lower()}
[hosts.sandbox]
prefix = ["nsenter", "-t", "{systemd_sandbox.pid}", "-m", "-p"]
[services.app]
environment = "staging"
host = "sandbox"
unit = "{UNIT}"
[services.app.health]
url = "http://127.0.0.1:{app.port}/health"
consecutive = 2
within_s = 5
interval_s = 0.1
[services.app.deploy]
root = "{app.root}"
git = "{app.repo.url}"
keep = 3
{deploy_extra}"""
