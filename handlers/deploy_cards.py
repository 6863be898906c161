"""The deploy card: one message per deployment, edited live, with its controls.

While a deploy runs, the card carries an Abort button; when it ends, the footer says what runs
now and, after a success, offers a Roll back button.
"""

from __future__ import annotations

import logging

from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.error import TelegramError

from handlers.callbacks import CallbackData
from handlers.context import OpsApplication, OpsContext
from handlers.deploy_render import render_outcome
from handlers.progress import ProgressMessage
from handlers.render import code, esc
from services.container import Services
from services.deploy.model import Deployment, DeploymentKind
from services.progress import Progress

log = logging.getLogger(__name__)
NS_ROLLBACK, NS_ABORT = "rb", "ab"


def card_data(namespace: str, action: str, deployment: Deployment) -> str:
    return CallbackData(namespace, action, deployment.id).encode()


def card_title(deployment: Deployment) -> str:
    name, version = f"<b>{esc(deployment.service)}</b>", code(deployment.version)
    where = esc(deployment.environment)
    if deployment.kind is DeploymentKind.DRILL:
        back = code(deployment.previous_version or "-")
        return (
            f"🧯 #{deployment.id} Rollback drill: {name} {version} → {back} → {version} in {where}"
        )
    verb = "Rolling back" if deployment.kind is DeploymentKind.ROLLBACK else "Deploying"
    return f"🚀 #{deployment.id} {verb} {name} {version} to {where}"


async def start_card(
    update: Update, message: Message, deployment: Deployment, context: OpsContext, *, reply: bool
) -> None:
    card = await message.reply_text(card_title(deployment)) if reply else message
    await _run_on_card(context.ops_application, card, deployment, update)


async def send_card(
    update: Update, context: OpsContext, deployment: Deployment, chat_id: int, reply_to: int | None
) -> None:
    """A new card in `chat_id` (e.g. under the /deploy that asked, once signed off)."""
    await launch(context.ops_application, deployment, chat_id, reply_to, update)


async def launch(
    application: OpsApplication,
    deployment: Deployment,
    chat_id: int,
    reply_to: int | None = None,
    update: Update | None = None,
) -> None:
    """Post the card in `chat_id` and run the deployment on it (also from the HTTP API)."""
    reply = (
        None if reply_to is None else ReplyParameters(reply_to, allow_sending_without_reply=True)
    )
    card = await application.bot.send_message(
        chat_id, card_title(deployment), reply_parameters=reply
    )
    await _run_on_card(application, card, deployment, update)


async def _run_on_card(
    application: OpsApplication, card: Message, deployment: Deployment, update: Update | None
) -> None:
    services = application.bot_data.require_services()
    title = card_title(deployment)
    await services.deployments.set_progress_message(deployment.id, card.chat_id, card.message_id)
    controls = None
    if deployment.kind is DeploymentKind.DEPLOY:
        abort = InlineKeyboardButton("⏹ Abort", callback_data=card_data(NS_ABORT, "go", deployment))
        controls = InlineKeyboardMarkup([[abort]])
    progress = ProgressMessage(card, title, controls=controls)
    # Tracked by the Application (tied to the update when there is one): errors reach the
    # error handler, and shutdown waits for the deploy.
    application.create_task(_run(services, deployment, progress), update=update)


async def retire_card(bot: Bot, deployment: Deployment) -> None:
    """The card of a run that died with opsgate: its Abort button would do nothing now."""
    if deployment.progress_chat_id is None or deployment.progress_message_id is None:
        return
    try:
        await bot.edit_message_reply_markup(
            deployment.progress_chat_id, deployment.progress_message_id, reply_markup=None
        )
    except TelegramError as exc:  # deleted, or had no buttons: nothing to retire
        log.info("card of #%s left as it was: %s", deployment.id, exc)


async def resume_after_restart(bot: Bot, services: Services, deployment: Deployment) -> None:
    """A deployment that had switched when opsgate stopped: verify it again, or roll back."""
    chat_id = deployment.progress_chat_id or services.ops.chats.deploys
    title = (
        f"♻️ #{deployment.id} Resuming <b>{esc(deployment.service)}</b> "
        f"{code(deployment.version)} after a restart of opsgate"
    )
    if chat_id is None:
        await services.pipeline.resume(deployment.id, Progress())
        return
    card = await bot.send_message(chat_id, title)
    await _run(services, deployment, ProgressMessage(card, title), resume=True)


async def _run(
    services: Services, deployment: Deployment, progress: ProgressMessage, resume: bool = False
) -> None:
    pipeline = services.pipeline
    steps = Progress(progress)
    if resume:
        outcome = await pipeline.resume(deployment.id, steps)
    elif deployment.kind is DeploymentKind.ROLLBACK:
        outcome = await pipeline.rollback(deployment.id, steps)
    elif deployment.kind is DeploymentKind.DRILL:
        outcome = await pipeline.drill(deployment.id, steps)
    else:
        outcome = await pipeline.run(deployment.id, steps)
    footer, offer_rollback = render_outcome(deployment, outcome)
    markup = None
    if offer_rollback:
        data = card_data(NS_ROLLBACK, "go", deployment)
        markup = InlineKeyboardMarkup([[InlineKeyboardButton("↩️ Roll back", callback_data=data)]])
    await progress.finish(footer, markup)
