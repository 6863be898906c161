"""The deploy card: one message per deployment, edited live, with its controls.

While a deploy runs, the card carries an Abort button (a canary's also Promote, Pause and
Resume); when it ends, the footer says what runs now and, after a success, offers a Roll back
button.
"""

from __future__ import annotations

import logging

from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Update,
)
from telegram.error import TelegramError

from handlers.callbacks import CallbackData
from handlers.context import OpsApplication
from handlers.dashboard_chat import with_dashboard
from handlers.deploy_render import NS_ABORT, NS_CANARY, NS_ROLLBACK, render_outcome
from handlers.progress import NewCard, ProgressMessage
from handlers.render import code, esc
from services.container import Services
from services.control.analysis import format_metric
from services.deploy.model import Deployment, DeploymentKind
from services.deploy.steps import DeployOutcome as Outcome
from services.progress import Progress
from services.reports.chart import canary_chart, canary_points

log = logging.getLogger(__name__)


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
    if deployment.kind is DeploymentKind.RESTORE:
        point = code(deployment.version)
        return (
            f"🗄 #{deployment.id} Restoring {name}'s database from rollback point {point} in {where}"
        )
    verb = "Rolling back" if deployment.kind is DeploymentKind.ROLLBACK else "Deploying"
    return f"🚀 #{deployment.id} {verb} {name} {version} to {where}"


def is_canary(services: Services, deployment: Deployment) -> bool:
    service = services.ops.services.get(deployment.service)
    return service is not None and service.deploy is not None and service.deploy.canary is not None


def canary_buttons(deployment: Deployment) -> list[InlineKeyboardButton]:
    return [
        InlineKeyboardButton(label, callback_data=card_data(NS_CANARY, action, deployment))
        for label, action in (
            ("⏩ Promote", "promote"),
            ("⏸ Pause", "pause"),
            ("▶️ Resume", "resume"),
        )
    ]


def launch(
    application: OpsApplication,
    deployment: Deployment,
    chat_id: int,
    reply_to: int | None = None,
    update: Update | None = None,
) -> None:
    """Run the deployment now; its card is posted in `chat_id` (under `reply_to`) and edited
    on a path of its own, so a slow or rate-limited chat never holds production back."""
    services = application.bot_data.require_services()
    controls = None
    if deployment.kind is DeploymentKind.DEPLOY:
        abort = InlineKeyboardButton("⏹ Abort", callback_data=card_data(NS_ABORT, "go", deployment))
        rows = [[abort]]
        if is_canary(services, deployment):
            rows.insert(0, canary_buttons(deployment))
        controls = InlineKeyboardMarkup(rows)
    controls = with_dashboard(controls, services.ops, chat_id)

    async def posted(chat: int, message_id: int) -> None:
        await services.deployments.set_progress_message(deployment.id, chat, message_id)

    card = NewCard(application.bot, chat_id, reply_to)
    progress = ProgressMessage(card, card_title(deployment), controls=controls, on_posted=posted)
    progress.start()
    # Tracked by the Application (tied to the update when there is one): errors reach the
    # error handler, and shutdown waits for the deploy.
    application.create_task(
        _run(services, deployment, progress, bot=application.bot), update=update
    )


def run_without_card(application: OpsApplication, deployment: Deployment) -> None:
    """No chat to show it in (no [chats] deploys, asked through the API): run it all the same."""
    services = application.bot_data.require_services()
    application.create_task(_run_headless(services, deployment))


async def _run_headless(services: Services, deployment: Deployment) -> None:
    steps = services.runtime.track(deployment.id, Progress())
    outcome = await _pipeline_run(services, deployment, steps)
    log.info("deployment #%s ended without a card: %s", deployment.id, outcome.state)


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
        steps = services.runtime.track(deployment.id, Progress())
        await services.pipeline.resume(deployment.id, steps)
        return
    controls = None
    if is_canary(services, deployment):  # its steps go on: so do its buttons
        abort = InlineKeyboardButton("⏹ Abort", callback_data=card_data(NS_ABORT, "go", deployment))
        controls = InlineKeyboardMarkup([canary_buttons(deployment), [abort]])
    progress = ProgressMessage(NewCard(bot, chat_id), title, controls=controls)
    progress.start()
    await _run(services, deployment, progress, resume=True, bot=bot)


async def _run(
    services: Services,
    deployment: Deployment,
    progress: ProgressMessage,
    resume: bool = False,
    bot: Bot | None = None,
) -> None:
    steps = services.runtime.track(deployment.id, Progress(progress))
    if resume:
        outcome = await services.pipeline.resume(deployment.id, steps)
    else:
        outcome = await _pipeline_run(services, deployment, steps)
    footer, offer_rollback = render_outcome(deployment, outcome)
    markup = None
    if offer_rollback:
        data = card_data(NS_ROLLBACK, "go", deployment)
        markup = InlineKeyboardMarkup([[InlineKeyboardButton("↩️ Roll back", callback_data=data)]])
    await progress.finish(footer, markup)
    if bot is not None and is_canary(services, deployment):
        await send_canary_chart(bot, services, deployment.id)


async def send_canary_chart(bot: Bot, services: Services, deployment_id: int) -> None:
    """Under the card: both versions' errors and p95 over the rollout, as a picture."""
    points = canary_points(await services.deployments.canary.analyses(deployment_id))
    deployment = await services.deployments.get(deployment_id)
    chat, card = deployment.progress_chat_id, deployment.progress_message_id
    if len(points) < 2 or chat is None:
        return
    last = points[-1]
    errors = [format_metric("errors", v) for v in (last.canary_errors, last.stable_errors)]
    p95 = [format_metric("p95", v) for v in (last.canary_p95_s, last.stable_p95_s)]
    caption = (
        f"#{deployment_id} canary vs stable, one point per analysis: errors above, p95 below;"
        " blue stable, orange canary, grey lines where the weight changed."
        f" Last at {last.weight}%: errors {errors[0]} vs {errors[1]}, p95 {p95[0]} vs {p95[1]}."
    )
    try:
        await bot.send_photo(
            chat,
            InputFile(canary_chart(points), filename=f"canary-{deployment_id}.png"),
            caption=caption[:1024],
            reply_to_message_id=card,
        )
    except TelegramError as exc:  # a picture is a courtesy: the card already says it all
        log.warning("canary chart of #%s not sent: %s", deployment_id, exc)


async def _pipeline_run(services: Services, deployment: Deployment, steps: Progress) -> Outcome:
    pipeline = services.pipeline
    if deployment.kind is DeploymentKind.ROLLBACK:
        return await pipeline.rollback(deployment.id, steps)
    if deployment.kind is DeploymentKind.DRILL:
        return await pipeline.drill(deployment.id, steps)
    if deployment.kind is DeploymentKind.RESTORE:
        return await pipeline.restore(deployment.id, steps)
    return await pipeline.run(deployment.id, steps)
