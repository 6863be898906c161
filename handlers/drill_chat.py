"""/drill SERVICE: a rollback drill outside production, timed, on one live card; /drill
SERVICE database [POINT]: a database backup restored into a scratch copy and checked."""

from __future__ import annotations

from telegram import Update

from config.permissions import Action
from handlers.commands import Command
from handlers.context import OpsContext
from handlers.render import deploy_problem, esc
from handlers.restore_chat import database_drill
from services.deploy.front_door import Origin, ProductionDrill
from services.errors import OpsgateError


async def drill(update: Update, context: OpsContext) -> None:
    """Rolls back to the previous good release, verifies, rolls forward: time to recover."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    if len(args) in (2, 3) and args[1] == "database":
        await database_drill(message, args, str(user.id), context)
        return
    if len(args) != 1:
        await message.reply_text(
            "Usage: /drill SERVICE (outside production) | /drill SERVICE database [POINT]"
        )
        return
    name = args[0]
    problem = deploy_problem(name, context.services.ops)
    if problem:
        await message.reply_text(problem)
        return
    origin = Origin("chat", message.chat_id, message.message_id)
    try:
        await context.services.front_door.drill(name, str(user.id), origin)
    except ProductionDrill as exc:
        await message.reply_text(f"⛔ {esc(exc)} Nothing was done.")
    except OpsgateError as exc:
        await message.reply_text(f"⛔ {esc(exc)}")


COMMANDS = [
    Command(
        "drill",
        "rollback drill outside production: SERVICE, or a database drill: SERVICE database",
        drill,
        action=Action.DRILL,
    ),
]
