"""How a long watch ended, told in the deploys chat under the deploy's card."""

from __future__ import annotations

import asyncio

from telegram import ReplyParameters

from handlers.context import OpsApplication
from handlers.render import duration, esc
from services.deploy.long_watch import LongWatch
from services.deploy.model import Deployment

RUNNING_WAIT_S = 60.0  # a watch may end while opsgate is still starting


def render_long_watch_end(watch: LongWatch, deployment: Deployment) -> str:
    head = f"<b>{esc(watch.service)}</b> {esc(watch.version)} (#{deployment.id})"
    watched = duration((watch.ends_at - watch.started_at).total_seconds())
    if watch.state == "clean":
        return f"✅ The {watched} watch of {head} ended clean: {esc(watch.note)}."
    if watch.state == "breached":
        after = (
            f" Rolling back to {esc(watch.previous_version or 'the release before')}"
            f" (#{watch.rollback_id})."
            if watch.rollback_id is not None
            else ""
        )
        return f"🚨 The {watched} watch of {head} was breached: {esc(watch.note)}{after}"
    return f"ℹ️ The {watched} watch of {head} ended ({esc(watch.state)}): {esc(watch.note)}."


class LongWatchNotices:
    def __init__(self, application: OpsApplication) -> None:
        self._application = application

    async def long_watch_ended(self, watch: LongWatch, deployment: Deployment) -> None:
        application = self._application
        for _ in range(int(RUNNING_WAIT_S * 10)):  # no event to await: PTB sets a flag
            if application.running:
                break
            await asyncio.sleep(0.1)
        ops = application.bot_data.require_services().ops
        chat_id = deployment.progress_chat_id or ops.chats.deploys
        if chat_id is None:
            return
        reply = None
        if deployment.progress_message_id is not None and chat_id == deployment.progress_chat_id:
            reply = ReplyParameters(
                deployment.progress_message_id, allow_sending_without_reply=True
            )
        text = render_long_watch_end(watch, deployment)
        await application.bot.send_message(chat_id, text, reply_parameters=reply)
