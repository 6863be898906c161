"""/deploy SERVICE VERSION [--dry-run], /rollback SERVICE [VERSION], /releases, /history.

A deploy into an environment that requires approval waits for an admin's Approve button
(the role checklists of the approvals issue replace that step); the pipeline then runs as a
task the Application tracks, editing one progress message, which ends with a Roll back
button.
"""

from __future__ import annotations

import logging

from telegram import Message, Update

from config.opsfile import is_valid_name
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
    words, environment = take_environment([a for a in args if a not in FLAGS], "to")
    if len(words) != 2 or (dry_run and emergency) or environment == "":
        await message.reply_text(
            "Usage: /deploy SERVICE VERSION [to ENVIRONMENT] [--dry-run | --emergency]"
        )
        return
    name, version = words
    if problem := deploy_problem(name, context.services.ops):
        await message.reply_text(problem)
        return
    door, actor = context.services.front_door, str(user.id)
    try:
        if dry_run:
            plan = await door.dry_run(name, version, actor, environment)
            await message.reply_text(render_dry_run(name, version, plan))
            return
        origin = Origin("chat", message.chat_id, message.message_id)
        requested = await door.deploy(
            name, version, actor, origin, emergency=emergency, environment=environment
        )
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
    args, environment = take_environment(context.args or [], "in")
    if len(args) not in (1, 2) or environment == "":
        await message.reply_text("Usage: /rollback SERVICE [VERSION] [in ENVIRONMENT]")
        return
    problem = deploy_problem(args[0], context.services.ops)
    if problem:
        await message.reply_text(problem)
        return
    version = args[1] if len(args) == 2 else None
    actor = str(user.id)
    await request_rollback(message, args[0], version, actor, "chat", context, environment)


async def promote(update: Update, context: OpsContext) -> None:
    """Deploys what runs in one environment to the next one, through the usual sign-off."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args, source = take_environment(context.args or [], "from")
    if len(args) != 1 or source == "":
        await message.reply_text("Usage: /promote SERVICE [from ENVIRONMENT]")
        return
    if problem := deploy_problem(args[0], context.services.ops):
        await message.reply_text(problem)
        return
    origin = Origin("chat", message.chat_id, message.message_id)
    try:
        requested = await context.services.front_door.promote(args[0], str(user.id), origin, source)
    except OpsgateError as exc:
        await message.reply_text(f"⛔ {esc(exc)} Nothing was done.")
        return
    await answer_request(message, requested)


def take_environment(words: list[str], keyword: str) -> tuple[list[str], str | None]:
    """`... to production` -> (the rest, "production"); None when not named; "" when the
    word after `keyword` is missing or not a name."""
    if keyword not in words:
        return words, None
    at = words.index(keyword)
    rest, named = words[:at] + words[at + 2 :], words[at + 1 : at + 2]
    if len(named) != 1 or not is_valid_name(named[0]):
        return rest, ""
    return rest, named[0]


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
        deployment.environment,
    )


async def releases(update: Update, context: OpsContext) -> None:
    """The releases kept on the host, current and bad ones marked."""
    message = update.effective_message
    if message is None:
        return
    args = context.args or []
    if len(args) not in (1, 2):
        await message.reply_text("Usage: /releases SERVICE [ENVIRONMENT]")
        return
    name, environment = args[0], (args[1] if len(args) == 2 else None)
    problem = deploy_problem(name, context.services.ops)
    if problem:
        await message.reply_text(problem)
        return
    try:
        service = context.services.front_door.deployable(name)
        environment = context.services.front_door.environment_of(service, name, environment)
        kept = await context.services.releases.releases(name, environment)
        hosts = await context.services.releases.current_by_host(name, environment)
    except OpsgateError as exc:
        await message.reply_text(f"⛔ Cannot read the releases of {esc(name)}: {esc(exc)}")
        return
    await message.reply_text(render_releases(name, kept, environment, hosts))


async def history(update: Update, context: OpsContext) -> None:
    """The last deployments, of one service or all."""
    message = update.effective_message
    if message is None:
        return
    name = " ".join(context.args or []) or None
    if name is not None and (problem := deploy_problem(name, context.services.ops)):
        await message.reply_text(problem)
        return
    deployments = context.services.deployments
    shown = await deployments.history(name, 15)
    hosts = {d.id: await deployments.hosts.rows(d.id) for d in shown}
    await message.reply_text(render_history(shown, hosts))


COMMANDS = [
    Command(
        "deploy",
        "deploy a release: SERVICE VERSION [to ENVIRONMENT] [--dry-run | --emergency]",
        deploy,
        action_for=action_of_deploy,
    ),
    Command(
        "promote",
        "deploy what runs in one environment to the next: SERVICE [from ENVIRONMENT]",
        promote,
        action=Action.DEPLOY,
    ),
    Command(
        "rollback",
        "roll back: SERVICE [VERSION] [in ENVIRONMENT]",
        rollback,
        action=Action.ROLLBACK,
    ),
    Command("releases", "releases kept for a service: SERVICE [ENVIRONMENT]", releases),
    Command("history", "recent deployments [SERVICE]", history),
]
BUTTONS = [
    ButtonRoute(NS_ROLLBACK, rollback_pressed, action=Action.ROLLBACK),
]
