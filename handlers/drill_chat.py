"""/drill SERVICE: a rollback drill outside production, timed, on one live card."""

from __future__ import annotations

from telegram import Update

from handlers.commands import Command
from handlers.context import OpsContext
from handlers.deploy_cards import start_card
from handlers.deploy_chat import DEPLOY_ROLE, deploy_problem
from handlers.render import esc
from services.deploy.locks import EnvLockError
from services.deploy.model import DeploymentError, DeploymentKind, DeploymentState
from services.deploy.windows import is_production
from services.hosts.primitives import HostCommandFailed


async def drill(update: Update, context: OpsContext) -> None:
    """Rolls back to the previous good release, verifies, rolls forward: time to recover."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    if len(args) != 1:
        await message.reply_text("Usage: /drill SERVICE (outside production)")
        return
    name = args[0]
    problem = deploy_problem(name, context)
    if problem:
        await message.reply_text(problem)
        return
    services = context.services
    environment_name = services.ops.services[name].environment
    environment = services.ops.environments.get(environment_name)
    if environment is None or is_production(environment_name, environment):
        await message.reply_text(
            f"⛔ Drills run outside production; <b>{esc(name)}</b> is in"
            f" {esc(environment_name)}. Nothing was done."
        )
        return
    try:
        current, back_to = await services.releases.drill_pair(name)
        requested = await services.deployments.request(
            name,
            environment_name,
            current,
            str(user.id),
            kind=DeploymentKind.DRILL,
            previous_version=back_to,
        )
    except (DeploymentError, EnvLockError, LookupError, HostCommandFailed) as exc:
        await message.reply_text(f"⛔ {esc(exc)}")
        return
    await services.deployments.advance(
        requested.id, DeploymentState.APPROVED, "opsgate", "drill outside production"
    )
    await start_card(update, message, requested, context, reply=True)


COMMANDS = [
    Command("drill", "rollback drill outside production: SERVICE", drill, role=DEPLOY_ROLE),
]
