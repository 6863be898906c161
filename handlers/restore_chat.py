"""/restore SERVICE [POINT] [in ENV]: a database put back from a rollback point (or the points
listed), and /drill SERVICE database [POINT]: a backup restored into a scratch copy, checked."""

from __future__ import annotations

from telegram import Message, Update

from config.permissions import Action
from handlers.commands import Command
from handlers.context import OpsContext
from handlers.render import code, deploy_problem, esc, join_lines
from handlers.replies import answer_request
from services.deploy.drills import DatabaseDrillReport
from services.deploy.front_door import Origin
from services.deploy.rollback_points import RollbackPoint
from services.errors import OpsgateError

USAGE = "Usage: /restore SERVICE [POINT] [in ENVIRONMENT] (no POINT: list the points)"


async def restore(update: Update, context: OpsContext) -> None:
    """Lists a service's database backups, or restores one (sign-off like a deploy)."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    environment = None
    if len(args) >= 2 and args[-2] == "in":
        environment, args = args[-1], args[:-2]
    if len(args) not in (1, 2):
        await message.reply_text(USAGE)
        return
    if problem := deploy_problem(args[0], context.services.ops):
        await message.reply_text(f"⛔ {problem} Nothing was done.")
        return
    front_door = context.services.front_door
    try:
        if len(args) == 1:
            points = await front_door.restore_points(args[0], environment)
            await message.reply_text(render_points(args[0], points))
            return
        origin = Origin("chat", message.chat_id, message.message_id)
        requested = await front_door.restore(args[0], args[1], str(user.id), origin, environment)
    except OpsgateError as exc:
        await message.reply_text(f"⛔ {esc(exc)} Nothing was done.")
        return
    await answer_request(message, requested)


async def database_drill(
    message: Message, args: list[str], actor: str, context: OpsContext
) -> None:
    """/drill SERVICE database [POINT]: called by handlers/drill_chat.py."""
    if problem := deploy_problem(args[0], context.services.ops):
        await message.reply_text(f"⛔ {problem} Nothing was done.")
        return
    point = args[2] if len(args) > 2 else None
    try:
        report = await context.services.front_door.database_drill(args[0], actor, point)
    except OpsgateError as exc:
        await message.reply_text(f"⛔ {esc(exc)}")
        return
    await message.reply_text(render_drill(args[0], report))


def render_points(name: str, points: list[RollbackPoint]) -> str:
    if not points:
        return f"<b>{esc(name)}</b> has no rollback point with a database backup yet."
    lines = [f"🗄 Database backups of <b>{esc(name)}</b>, newest first:"]
    for point in points[:20]:
        before = f", before {code(point.previous_version)}" if point.previous_version else ""
        lines.append(f"• {code(point.deployment_id)} {esc(point.created_at)}{before}")
    lines.append(f"Restore one: /restore {esc(name)} POINT")
    return join_lines(lines)


def render_drill(name: str, report: DatabaseDrillReport) -> str:
    head = "✅" if report.ok else "❌"
    found = esc("; ".join(report.integrity)[:600] or "no answer")
    return join_lines(
        [
            f"{head} Database drill of <b>{esc(name)}</b>: rollback point "
            f"{code(report.point)} ({esc(report.created_at)}) restored into a scratch copy "
            f"in {report.seconds:.2f} s.",
            f"integrity_check: {found}; {report.tables} table(s).",
            "The live database was not touched; the scratch copy is deleted.",
        ]
    )


COMMANDS = [
    Command(
        "restore",
        "restore a database from a rollback point: SERVICE [POINT]",
        restore,
        action=Action.ROLLBACK,
    ),
]
