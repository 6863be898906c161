"""A local Bot API server for end-to-end tests and offline demos of opsgate.

``SandboxServer`` / ``SandboxThread`` speak the Bot API methods opsgate uses (with Telegram's
limits and error texts) plus a ``/control/`` API; ``SandboxClient`` drives that control API.
"""

from bot.dev.sandbox.client import Button, SandboxClient, SandboxError, SandboxFile, SandboxMessage
from bot.dev.sandbox.html import Entity, HtmlParseError, parse_html
from bot.dev.sandbox.models import BOT
from bot.dev.sandbox.server import SandboxServer, SandboxThread, create_app
from bot.dev.sandbox.state import SandboxState

__all__ = [
    "BOT",
    "Button",
    "Entity",
    "HtmlParseError",
    "SandboxClient",
    "SandboxError",
    "SandboxFile",
    "SandboxMessage",
    "SandboxServer",
    "SandboxState",
    "SandboxThread",
    "create_app",
    "parse_html",
]
