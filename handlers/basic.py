"""/start, /help, /whoami, /status, /reload and the answer to unknown commands."""

from __future__ import annotations

from telegram import Update

from config.opsfile import OpsFileError, load_ops_file
from config.permissions import Action
from handlers.commands import Command, parse_command
from handlers.context import OpsContext
from handlers.dashboard_chat import with_dashboard
from handlers.render import code, duration, esc, join_lines
from services.flags.types import BucketingChangeRefused


async def start(update: Update, context: OpsContext) -> None:
    """Greets and points at /help."""
    if update.effective_message is None:
        return
    await update.effective_message.reply_text(
        "👋 This is <b>opsgate</b>: deployments, rollbacks, flags and alerts from this chat.\n"
        "Send /help to see what you can do, /whoami for your ids."
    )


async def help_command(update: Update, context: OpsContext) -> None:
    """Lists the commands the asker's roles allow."""
    if update.effective_message is None or update.effective_user is None:
        return
    ops = context.services.ops
    visible = context.commands.visible_to(ops.roles_of(update.effective_user.id), ops.permissions)
    lines = [f"/{c.name} — {esc(c.description)}" for c in visible]
    hidden = len(context.commands.all()) - len(lines)
    if hidden:
        lines.append(f"\n<i>{hidden} more command(s) need a role you do not have.</i>")
    await update.effective_message.reply_text(join_lines(["<b>Commands</b>", *lines]))


async def whoami(update: Update, context: OpsContext) -> None:
    """Tells the asker their user id, this chat's id and their roles: what the ops file needs."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    ops = context.services.ops
    name = ops.name_of(user.id)
    roles = sorted(ops.roles_of(user.id))
    title = f" ({esc(chat.title)})" if chat.title else ""
    lines = [
        f"You: {code(user.id)}" + (f" = <b>{esc(name)}</b>" if name else " (not in [people])"),
        f"This chat: {code(chat.id)}, {esc(chat.type)}{title}",
        "Roles: " + (", ".join(esc(r) for r in roles) if roles else "none"),
    ]
    if name is None:
        lines.append(f'To be known, add <code>{user.id} = "yourname"</code> under [people].')
    await message.reply_text("\n".join(lines))


async def status(update: Update, context: OpsContext) -> None:
    """Version, uptime and the services opsgate knows."""
    if update.effective_message is None:
        return
    services = context.services
    lines = [
        f"<b>opsgate</b> {esc(services.version)}, up {duration(services.uptime_seconds())}",
        f"Services known: {len(services.ops.services)}",
    ]
    leadership = services.leadership
    if leadership is not None and leadership.shared and leadership.leading is not None:
        since = leadership.leading.since.strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"Leader: {esc(leadership.leading.name)} (since {since}), on PostgreSQL")
    for name, service in sorted(services.ops.services.items()):
        where = f"{esc(service.manager)} {code(service.control_name)}"
        envs = ", ".join(
            f"{env} ×{len(service.hosts_in(env))}" if len(service.hosts_in(env)) > 1 else env
            for env in service.environment_names()
        )
        lines.append(f"• <b>{esc(name)}</b> ({esc(envs)}) {where}")
    chat_id = update.effective_message.chat_id
    markup = with_dashboard(None, services.ops, chat_id)
    await update.effective_message.reply_text(join_lines(lines), reply_markup=markup)


async def reload(update: Update, context: OpsContext) -> None:
    """Re-reads the ops file; a file with problems is refused and the old one stays."""
    if update.effective_message is None or update.effective_user is None:
        return
    services = context.services
    path = services.ops_path
    try:
        new_ops = load_ops_file(path)
    except OpsFileError as exc:
        problems = [f"• {esc(p)}" for p in exc.problems]
        header = f"⚠️ Kept the old ops file: {code(path)} has {len(problems)} problem(s)."
        await update.effective_message.reply_text(join_lines([header, *problems]))
        return
    try:
        await services.replace_ops(new_ops)
    except BucketingChangeRefused as exc:
        await update.effective_message.reply_text(f"⚠️ Kept the old ops file: {esc(exc)}.")
        return
    await services.audit.record("config.reloaded", actor=str(update.effective_user.id))
    await update.effective_message.reply_text(
        f"✅ Reloaded {code(path)}: {len(new_ops.services)} service(s), "
        f"{len(new_ops.people)} people, {len(new_ops.roles)} role(s)."
    )


async def unknown_command(update: Update, context: OpsContext) -> None:
    """Answers commands nobody registered, so a typo is not met with silence."""
    message = update.effective_message
    if message is None or not message.text:
        return
    parsed = parse_command(message.text, context.bot.username)
    if parsed is None or context.commands.get(parsed.name) is not None:
        return
    await message.reply_text(f"Unknown command /{esc(parsed.name)}. Send /help for the list.")


COMMANDS = [
    Command("start", "what opsgate is", start),
    Command("help", "the commands you may use", help_command),
    Command("whoami", "your user id, this chat's id and your roles", whoami, anywhere=True),
    Command("status", "opsgate's version, uptime and services", status),
    Command("reload", "re-read the ops file", reload, action=Action.ADMIN),
]
