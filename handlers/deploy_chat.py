"""/deploy SERVICE VERSION [--dry-run], /rollback SERVICE [VERSION], /releases, /history.

A deploy into an environment that requires approval waits for an admin's Approve button
(the role checklists of the approvals issue replace that step); the pipeline then runs as a
task the Application tracks, editing one progress message, which ends with a Roll back
button.
"""

from __future__ import annotations

import logging

from telegram import Message, Update

from handlers.approvals_chat import ask_signoff
from handlers.buttons import NO_LONGER_VALID, ButtonRoute
from handlers.callbacks import CallbackData
from handlers.commands import Command
from handlers.context import OpsContext
from handlers.deploy_cards import NS_ROLLBACK, start_card
from handlers.deploy_render import (
    render_dry_run,
    render_history,
    render_releases,
)
from handlers.render import code, esc
from handlers.services_chat import service_name_problem
from services.approvals.model import deploy_policy, rollback_rule
from services.deploy.locks import EnvLockError
from services.deploy.model import Deployment, DeploymentError, DeploymentKind
from services.deploy.model import DeploymentState as S
from services.deploy.windows import deploy_refusal
from services.hosts.primitives import HostCommandFailed
from services.releases.build import InvalidVersion, validate_version

log = logging.getLogger(__name__)

DEPLOY_ROLE = "sre"
EMERGENCY_ROLE = "oncall"
FLAGS = ("--dry-run", "--emergency")


def deploy_problem(name: str, context: OpsContext) -> str | None:
    """Why `name` cannot be deployed, as a chat reply; None when it can."""
    problem = service_name_problem(name, sorted(context.services.ops.services))
    if problem is None and context.services.ops.services[name].deploy is None:
        problem = f"<b>{esc(name)}</b> has no <code>deploy</code> section in the ops file."
    return problem


async def deploy(update: Update, context: OpsContext) -> None:
    """Requests a deployment; runs it at once or after an admin approves."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    dry_run, emergency = "--dry-run" in args, "--emergency" in args
    words = [a for a in args if a not in FLAGS]
    if len(words) != 2 or (dry_run and emergency):
        await message.reply_text("Usage: /deploy SERVICE VERSION [--dry-run | --emergency]")
        return
    name, version = words
    problem = deploy_problem(name, context)
    if problem:
        await message.reply_text(problem)
        return
    try:
        validate_version(version)
    except InvalidVersion as exc:
        await message.reply_text(f"⚠️ {esc(exc)} Nothing was done.")
        return
    services = context.services
    service = services.ops.services[name]
    environment = services.ops.environments.get(service.environment)
    refusal = None
    if environment is not None and not emergency:
        refusal = deploy_refusal(service.environment, environment, services.clock())
    if dry_run:
        await services.audit.record("deploy.dry_run", str(user.id), name, {"version": version})
        await message.reply_text(render_dry_run(name, version, service, refusal))
        return
    if refusal is not None:
        await message.reply_text(
            f"⛔ {esc(refusal)}. Nothing was done. /rollback is always allowed; an on-call"
            " <code>--emergency</code> deploy is not held back either."
        )
        return
    try:
        requested = await services.deployments.request(
            name, service.environment, version, str(user.id), emergency=emergency
        )
    except (DeploymentError, EnvLockError) as exc:
        await message.reply_text(f"⛔ {esc(exc)}")
        return
    policy = deploy_policy(services.ops, service.environment)
    if policy is not None and not emergency:
        await ask_signoff(message, requested, policy, context)
        return
    note = "emergency: approval after the fact" if policy else "no approval needed"
    await services.deployments.advance(requested.id, S.APPROVED, str(user.id), note)
    if policy is not None:
        await _after_the_fact(requested, user.id, context)
    await start_card(update, message, requested, context, reply=True)


async def _after_the_fact(deployment: Deployment, user_id: int, context: OpsContext) -> None:
    """An emergency deploy skipped approval: the approvers are asked to review it now."""
    ops = context.services.ops
    chat_id = ops.chats.approvals or ops.chats.deploys
    if chat_id is None:
        return
    who = esc(ops.name_of(user_id) or str(user_id))
    await context.bot.send_message(
        chat_id,
        f"🚨 Emergency deploy #{deployment.id}: <b>{esc(deployment.service)}</b> "
        f"{code(deployment.version)} to {esc(deployment.environment)} by {who}, without "
        f"approval. Review it now; /rollback {esc(deployment.service)} undoes it.",
    )


def role_for_deploy(args: str) -> str:
    """`--emergency` skips approval, so only the on-call role may use it."""
    return EMERGENCY_ROLE if "--emergency" in args.split() else DEPLOY_ROLE


async def rollback(update: Update, context: OpsContext) -> None:
    """Rolls back to the given release, or to the newest good one before the current."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    if len(args) not in (1, 2):
        await message.reply_text("Usage: /rollback SERVICE [VERSION]")
        return
    problem = deploy_problem(args[0], context)
    if problem:
        await message.reply_text(problem)
        return
    version = args[1] if len(args) == 2 else None
    await request_rollback(update, message, args[0], version, str(user.id), context)


async def request_rollback(
    update: Update,
    message: Message,
    name: str,
    version: str | None,
    actor: str,
    context: OpsContext,
) -> None:
    services = context.services
    environment = services.ops.services[name].environment
    # Where deploys need sign-off, a rollback needs one person of a rollback role: the
    # requester themself when they hold one (recorded as an emergency), else someone else.
    policy, emergency = rollback_rule(services.ops, environment, int(actor))
    try:
        target = await services.releases.rollback_target(name, version)
        requested = await services.deployments.request(
            name, environment, target, actor, kind=DeploymentKind.ROLLBACK, emergency=emergency
        )
    except (DeploymentError, EnvLockError, InvalidVersion, LookupError, HostCommandFailed) as exc:
        await message.reply_text(f"⛔ {esc(exc)}")
        return
    if policy is not None and not emergency:
        await ask_signoff(message, requested, policy, context)
        return
    note = "emergency policy: the requester holds a rollback role" if emergency else "rollback"
    await services.deployments.advance(requested.id, S.APPROVED, actor, note)
    await start_card(update, message, requested, context, reply=True)


async def rollback_pressed(update: Update, context: OpsContext) -> None:
    """The Roll back button on a finished deploy's card."""
    query = update.callback_query
    if query is None or not isinstance(query.message, Message):
        return
    data = CallbackData.decode(query.data)
    try:
        deployment = await context.services.deployments.get(data.row_id)
    except DeploymentError:
        deployment = None
    if deployment is None or deployment.state is not S.SUCCEEDED or not deployment.previous_version:
        await query.answer(NO_LONGER_VALID, show_alert=True)
        return
    await query.answer(f"Rolling back to {deployment.previous_version}…")
    await query.message.edit_reply_markup(None)
    await request_rollback(
        update,
        query.message,
        deployment.service,
        deployment.previous_version,
        str(query.from_user.id),
        context,
    )


async def releases(update: Update, context: OpsContext) -> None:
    """The releases kept on the host, current and bad ones marked."""
    message = update.effective_message
    if message is None:
        return
    name = " ".join(context.args or [])
    problem = deploy_problem(name, context)
    if problem:
        await message.reply_text(problem)
        return
    try:
        kept = await context.services.releases.releases(name)
    except HostCommandFailed as exc:
        await message.reply_text(f"⛔ Cannot read the releases of {esc(name)}: {esc(exc)}")
        return
    await message.reply_text(render_releases(name, kept))


async def history(update: Update, context: OpsContext) -> None:
    """The last deployments, of one service or all."""
    message = update.effective_message
    if message is None:
        return
    name = " ".join(context.args or []) or None
    if name is not None and (problem := deploy_problem(name, context)):
        await message.reply_text(problem)
        return
    await message.reply_text(render_history(await context.services.deployments.history(name, 15)))


COMMANDS = [
    Command(
        "deploy",
        "deploy a release: SERVICE VERSION [--dry-run | --emergency]",
        deploy,
        role_for=role_for_deploy,
    ),
    Command("rollback", "roll back: SERVICE [VERSION]", rollback, role=DEPLOY_ROLE),
    Command("releases", "releases kept for a service", releases),
    Command("history", "recent deployments [SERVICE]", history),
]
BUTTONS = [
    ButtonRoute(NS_ROLLBACK, rollback_pressed, role=DEPLOY_ROLE),
]
