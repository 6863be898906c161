"""/deploy SERVICE VERSION [--dry-run], /rollback SERVICE [VERSION], /releases, /history.

A deploy into an environment that requires approval waits for an admin's Approve button
(the role checklists of the approvals issue replace that step); the pipeline then runs as a
task the Application tracks, editing one progress message, which ends with a Roll back
button.
"""

from __future__ import annotations

import logging

from telegram import Message, Update

from config.permissions import Action
from handlers.buttons import NO_LONGER_VALID, ButtonRoute
from handlers.callbacks import CallbackData
from handlers.commands import Command
from handlers.context import OpsContext
from handlers.deploy_render import (
    NS_ROLLBACK,
    render_dry_run,
    render_history,
    render_releases,
)
from handlers.render import deploy_problem, esc
from handlers.replies import answer_request, request_rollback
from services.deploy.front_door import Origin, OutsideWindow
from services.deploy.model import DeploymentError
from services.deploy.model import DeploymentState as S
from services.errors import OpsgateError
from services.releases.build import InvalidVersion

log = logging.getLogger(__name__)

FLAGS = ("--dry-run", "--emergency")


async def deploy(update: Update, context: OpsContext) -> None:
    """Requests a deployment through the front door: it runs now or after sign-off."""
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
    if problem := deploy_problem(name, context.services.ops):
        await message.reply_text(problem)
        return
    door, actor = context.services.front_door, str(user.id)
    try:
        if dry_run:
            plan = await door.dry_run(name, version, actor)
            await message.reply_text(render_dry_run(name, version, plan.service, plan.refusal))
            return
        origin = Origin("chat", message.chat_id, message.message_id)
        requested = await door.deploy(name, version, actor, origin, emergency=emergency)
    except InvalidVersion as exc:
        await message.reply_text(f"⚠️ {esc(exc)} Nothing was done.")
        return
    except OutsideWindow as exc:
        await message.reply_text(
            f"⛔ {esc(exc)}. Nothing was done. /rollback is always allowed; an on-call"
            " <code>--emergency</code> deploy is not held back either."
        )
        return
    except OpsgateError as exc:
        await message.reply_text(f"⛔ {esc(exc)}")
        return
    await answer_request(message, requested)


def action_of_deploy(args: str) -> Action:
    """`--emergency` skips approval, so it needs its own role (on-call by default)."""
    return Action.EMERGENCY if "--emergency" in args.split() else Action.DEPLOY


async def rollback(update: Update, context: OpsContext) -> None:
    """Rolls back to the given release, or to the newest good one before the current."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    if len(args) not in (1, 2):
        await message.reply_text("Usage: /rollback SERVICE [VERSION]")
        return
    problem = deploy_problem(args[0], context.services.ops)
    if problem:
        await message.reply_text(problem)
        return
    version = args[1] if len(args) == 2 else None
    await request_rollback(message, args[0], version, str(user.id), "chat", context)


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
        query.message,
        deployment.service,
        deployment.previous_version,
        str(query.from_user.id),
        "button",
        context,
    )


async def releases(update: Update, context: OpsContext) -> None:
    """The releases kept on the host, current and bad ones marked."""
    message = update.effective_message
    if message is None:
        return
    name = " ".join(context.args or [])
    problem = deploy_problem(name, context.services.ops)
    if problem:
        await message.reply_text(problem)
        return
    try:
        kept = await context.services.releases.releases(name)
    except OpsgateError as exc:
        await message.reply_text(f"⛔ Cannot read the releases of {esc(name)}: {esc(exc)}")
        return
    await message.reply_text(render_releases(name, kept))


async def history(update: Update, context: OpsContext) -> None:
    """The last deployments, of one service or all."""
    message = update.effective_message
    if message is None:
        return
    name = " ".join(context.args or []) or None
    if name is not None and (problem := deploy_problem(name, context.services.ops)):
        await message.reply_text(problem)
        return
    await message.reply_text(render_history(await context.services.deployments.history(name, 15)))


COMMANDS = [
    Command(
        "deploy",
        "deploy a release: SERVICE VERSION [--dry-run | --emergency]",
        deploy,
        action_for=action_of_deploy,
    ),
    Command("rollback", "roll back: SERVICE [VERSION]", rollback, action=Action.ROLLBACK),
    Command("releases", "releases kept for a service", releases),
    Command("history", "recent deployments [SERVICE]", history),
]
BUTTONS = [
    ButtonRoute(NS_ROLLBACK, rollback_pressed, action=Action.ROLLBACK),
]
