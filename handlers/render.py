"""Small, pure helpers for chat text in HTML parse mode."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from config.opsfile import OpsConfig, is_valid_name

# Telegram's limit is 4096 characters after entity parsing; raw HTML is never shorter than
# what it renders to, so staying under the limit in raw HTML is always safe.
MESSAGE_LIMIT = 4096


def esc(value: object) -> str:
    """Escape anything that came from a user, a command or a file."""
    return escape(str(value), quote=False)


def code(value: object) -> str:
    return f"<code>{esc(value)}</code>"


def join_lines(lines: Iterable[str], limit: int = MESSAGE_LIMIT) -> str:
    """Join complete HTML lines, dropping whole lines at the end rather than cutting a tag."""
    kept: list[str] = []
    all_lines = list(lines)
    size = 0
    for index, line in enumerate(all_lines):
        remaining = len(all_lines) - index
        footer = f"… and {remaining} more line(s)"
        if size + len(line) + 1 > limit - len(footer) - 1 and remaining > 1:
            kept.append(footer)
            break
        if size + len(line) + 1 > limit:
            kept.append(footer)
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)


def duration(seconds: float) -> str:
    """1d 2h, 3h 4m, 5m 6s, 7s: two units are enough for a person."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def who(ops: OpsConfig, user_id: str | None) -> str:
    if user_id is None:
        return "-"
    name = ops.name_of(int(user_id)) if user_id.isdigit() else None
    return esc(name or user_id)


def service_name_problem(args: str, known: list[str]) -> str | None:
    """Why `args` is not one known service name, as a chat reply; None when it is one."""
    if not args:
        return "Give a service name, e.g. <code>/service web</code>."
    if not is_valid_name(args) or args not in known:
        shown = esc(args[:40]) + ("…" if len(args) > 40 else "")
        return f"Unknown service <code>{shown}</code>. Known: {esc(', '.join(known) or 'none')}."
    return None


def deploy_problem(name: str, ops: OpsConfig) -> str | None:
    """Why `name` cannot be deployed, as a chat reply; None when it can."""
    problem = service_name_problem(name, sorted(ops.services))
    if problem is None and ops.services[name].deploy is None:
        problem = f"<b>{esc(name)}</b> has no <code>deploy</code> section in the ops file."
    return problem


def mention(ops: OpsConfig, user_id: int) -> str:
    """A mention that notifies the person, by name."""
    return f'<a href="tg://user?id={user_id}">{esc(ops.name_of(user_id) or str(user_id))}</a>'
