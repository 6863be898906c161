"""/lock ENV reason, /unlock ENV and /locks: hand-made environment locks for deploys."""

from __future__ import annotations

from telegram import Update

from config.permissions import Action
from handlers.commands import Command
from handlers.context import OpsContext
from handlers.render import esc, join_lines
from services.deploy.locks import EnvironmentLocked, EnvLock, EnvLockError


def _who(lock: EnvLock, context: OpsContext) -> str:
    name = context.services.ops.name_of(int(lock.locked_by)) if lock.locked_by.isdigit() else None
    return esc(name or lock.locked_by)


def _line(lock: EnvLock, context: OpsContext) -> str:
    since = lock.since.strftime("%Y-%m-%d %H:%M UTC")
    who = _who(lock, context)
    return f"🔒 <b>{esc(lock.environment)}</b> by {who} since {since}: {esc(lock.reason)}"


def _known_environment(name: str, context: OpsContext) -> str | None:
    """Why `name` is not an environment of the ops file, or None when it is."""
    known = sorted(context.services.ops.environments)
    if name in known:
        return None
    listed = esc(", ".join(known) or "none")
    return f"Unknown environment <code>{esc(name[:40])}</code>. Known: {listed}."


async def lock(update: Update, context: OpsContext) -> None:
    """Locks an environment against deploys, with a reason everyone sees."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    if len(args) < 2:
        await message.reply_text("Usage: /lock ENVIRONMENT reason, e.g. /lock production freeze")
        return
    problem = _known_environment(args[0], context)
    if problem:
        await message.reply_text(problem)
        return
    try:
        locked = await context.services.env_locks.lock(args[0], str(user.id), " ".join(args[1:]))
    except EnvironmentLocked as exc:  # said with the holder's name, as /locks says it
        name = context.services.ops.name_of_actor(exc.lock.locked_by)
        await message.reply_text(f"⚠️ {esc(exc.lock.describe(name))}")
        return
    except EnvLockError as exc:
        await message.reply_text(f"⚠️ {esc(exc)}")
        return
    await message.reply_text(f"{_line(locked, context)}\nDeploys there are refused until /unlock.")


async def unlock(update: Update, context: OpsContext) -> None:
    """Lifts an environment's lock."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    if len(args) != 1:
        await message.reply_text("Usage: /unlock ENVIRONMENT")
        return
    try:
        ended = await context.services.env_locks.unlock(args[0], str(user.id))
    except EnvLockError as exc:
        await message.reply_text(f"⚠️ {esc(exc)}")
        return
    who = esc(context.services.ops.name_of(user.id) or user.first_name)
    await message.reply_text(f"🔓 <b>{esc(ended.environment)}</b> unlocked by {who}.")


async def locks(update: Update, context: OpsContext) -> None:
    """Every environment lock in force."""
    if update.effective_message is None:
        return
    held = await context.services.env_locks.all()
    lines = [_line(lock, context) for lock in held] or ["No environment is locked."]
    await update.effective_message.reply_text(join_lines(lines))


COMMANDS = [
    Command("lock", "lock an environment against deploys: ENV reason", lock, action=Action.LOCK),
    Command("unlock", "lift an environment's lock", unlock, action=Action.LOCK),
    Command("locks", "environment locks in force", locks),
]
