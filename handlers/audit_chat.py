"""/audit ID: a deployment's whole trail as JSON and CSV documents."""

from __future__ import annotations

import re

from telegram import InputFile, Update

from handlers.commands import Command
from handlers.context import OpsContext
from handlers.render import esc
from services.deploy.model import DeploymentError
from services.reports.audit_export import trail_csv, trail_json


async def audit(update: Update, context: OpsContext) -> None:
    """Sends the trail of one deployment: request, sign-off, evidence, pipeline events."""
    message = update.effective_message
    if message is None:
        return
    args = context.args or []
    if len(args) != 1 or not re.fullmatch(r"#?[0-9]{1,18}", args[0]):
        await message.reply_text("Usage: /audit ID (the deployment's number, e.g. /audit 12)")
        return
    deployment_id = int(args[0].lstrip("#"))
    try:
        trail = await context.services.audit_export.trail(deployment_id)
    except DeploymentError as exc:
        await message.reply_text(f"⛔ {esc(exc)}")
        return
    events = len(trail["events"])
    await message.reply_document(
        InputFile(trail_json(trail), filename=f"opsgate-deployment-{deployment_id}.json"),
        caption=f"🧾 Deployment #{deployment_id}: {events} event(s), sign-off and evidence.",
    )
    await message.reply_document(
        InputFile(trail_csv(trail), filename=f"opsgate-deployment-{deployment_id}.csv"),
        caption=f"🧾 Deployment #{deployment_id}: one row per event (UTC).",
    )


COMMANDS = [Command("audit", "a deployment's full trail as JSON and CSV: ID", audit)]
