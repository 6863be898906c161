"""/dashboard, and the 📊 Dashboard button other messages carry when [dashboard] is set.

Telegram opens a Mini App (with the person's signed identity) from a web_app button only in
a private chat, and only for an https page. In groups the button is a link: to the Mini App's
t.me link when [dashboard] miniapp_link is set (Telegram then opens it as a Mini App too),
else to the page itself, where a browser without a session is told to ask for a login link.
"""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update, WebAppInfo

from config.opsfile import OpsConfig
from handlers.commands import Command
from handlers.context import OpsContext
from handlers.render import esc

LABEL = "📊 Dashboard"


def dashboard_button(ops: OpsConfig, chat_id: int) -> InlineKeyboardButton | None:
    """The button for a message in this chat; None without [dashboard]."""
    dashboard = ops.dashboard
    if dashboard is None:
        return None
    if chat_id > 0 and dashboard.opens_in_telegram:  # private chats have positive ids
        return InlineKeyboardButton(LABEL, web_app=WebAppInfo(dashboard.page))
    link = dashboard.miniapp_link or dashboard.page
    return InlineKeyboardButton(LABEL, url=str(link))


def with_dashboard(
    markup: InlineKeyboardMarkup | None, ops: OpsConfig, chat_id: int
) -> InlineKeyboardMarkup | None:
    """`markup` with a last row holding the dashboard button (when there is one)."""
    button = dashboard_button(ops, chat_id)
    if button is None:
        return markup
    rows = [list(row) for row in markup.inline_keyboard] if markup is not None else []
    return InlineKeyboardMarkup([*rows, [button]])


async def dashboard_command(update: Update, context: OpsContext) -> None:
    """In a private chat: the Mini App button and a one-time login link for a browser. In a
    group: the button only (a login link there would be anyone's)."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    services = context.services
    dashboard = services.ops.dashboard
    if dashboard is None:
        await message.reply_text(
            "The dashboard is not set up: an admin adds <code>[dashboard] url</code> (its https"
            " address) to the ops file, then /reload."
        )
        return
    if chat.type != "private":
        await message.reply_text(
            "📊 The dashboard. For a browser login link, send /dashboard to me in a private chat.",
            reply_markup=with_dashboard(None, services.ops, chat.id),
        )
        return
    if user.id not in services.ops.people:
        await message.reply_text("You are not in this team's [people]: ask an admin to add you.")
        return
    token = await services.login_links.issue(user.id, dashboard.login_link_ttl_s)
    link = f"{dashboard.page}login?token={token}"
    minutes = max(1, dashboard.login_link_ttl_s // 60)
    rows = [[InlineKeyboardButton("🔑 Sign in in a browser", url=link)]]
    if dashboard.opens_in_telegram:
        rows.insert(0, [InlineKeyboardButton(LABEL, web_app=WebAppInfo(dashboard.page))])
    await message.reply_text(
        f"📊 Open the dashboard here, or sign in in a browser with the link: it works once,"
        f" for {minutes} min, and only for you ({esc(services.ops.name_of(user.id) or user.id)}).",
        reply_markup=InlineKeyboardMarkup(rows),
    )


COMMANDS = [
    Command("dashboard", "the web dashboard: a Mini App, or a login link", dashboard_command)
]
