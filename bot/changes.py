"""The front door's listener in Telegram: sign-off messages, emergency notices, deploy cards.

services/deploy/front_door.py decides what happens to a request; this shows it: the approval
message in the approvals chat, the notice to approvers when an emergency skipped them, and
the live card under the message that asked (or in the deploys chat for the API and CLI).
"""

from __future__ import annotations

import logging

from bot.deploy_cards import launch, run_without_card
from handlers.approvals_chat import open_signoff, refresh_signoff
from handlers.context import OpsApplication
from handlers.deploy_render import render_emergency_notice
from handlers.render import who
from services.approvals.model import ApprovalRequest, Policy
from services.deploy.front_door import Origin
from services.deploy.model import Deployment

log = logging.getLogger(__name__)


class TelegramChanges:
    def __init__(self, application: OpsApplication) -> None:
        self._application = application

    async def signoff_requested(
        self, deployment: Deployment, policy: Policy, origin: Origin
    ) -> ApprovalRequest:
        asked = None
        if origin.chat_id is not None and origin.message_id is not None:
            asked = (origin.chat_id, origin.message_id)
        services = self._application.bot_data.require_services()
        return await open_signoff(self._application.bot, services, deployment, policy, asked)

    async def signoff_ended(self, request: ApprovalRequest) -> None:
        services = self._application.bot_data.require_services()
        await refresh_signoff(self._application.bot, services, request)

    async def emergency_without_signoff(self, deployment: Deployment, actor: str) -> None:
        ops = self._application.bot_data.require_services().ops
        chat_id = ops.chats.approvals or ops.chats.deploys
        if chat_id is None:
            log.warning("emergency deploy #%s: no approvals chat to tell", deployment.id)
            return
        text = render_emergency_notice(deployment, who(ops, actor))
        await self._application.bot.send_message(chat_id, text)

    async def go(self, deployment: Deployment, origin: Origin) -> None:
        ops = self._application.bot_data.require_services().ops
        chat_id = origin.chat_id if origin.chat_id is not None else ops.chats.deploys
        if chat_id is None:
            run_without_card(self._application, deployment)
            return
        launch(self._application, deployment, chat_id, origin.message_id)
