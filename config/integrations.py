"""The ops file's edges with other tools: API tokens per caller, and outgoing webhooks.

[api_tokens.ci]                       # a pipeline: acts as a person (the audit names them)
sha256 = "9f86d08...c15d0"            # of the token; the token itself is never in the file
person = 1003
[api_tokens.deploybot]                # or as a role of its own, named in the audit
sha256 = "..."
role = "sre"

[webhooks.ci]                         # events POSTed as JSON, Standard Webhooks signatures
url = "https://ci.example.com/opsgate"
events = ["deploy.*", "approval.*"]   # audit event kinds; "*" ends a prefix
secret_env = "OPSGATE_WEBHOOK_CI_SECRET"   # "whsec_" + base64, from the environment
timeout_s = 10                        # per POST; retries wait backoff_s, doubling up to
backoff_s = 5                         # backoff_max_s; after max_attempts tries or max_age_h
backoff_max_s = 600                   # hours since the event, the delivery is given up
max_attempts = 20                     # (recorded: /health, /metrics, audit webhook.gave_up)
max_age_h = 48

[dashboard]                           # the web dashboard and Telegram Mini App at /app/
url = "https://ops.example.com/app/"  # where people reach it (https: Telegram's rule)
miniapp_link = "https://t.me/opsgate_bot/ops"  # optional: a Mini App link for group chats
auth_max_age_s = 3600                 # Telegram's initData older than this is refused
login_link_ttl_s = 300                # a /dashboard login link works once, this long
session_ttl_s = 43200                 # then the browser signs in again
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, HttpUrl, StringConstraints

from config.strict import StrictModel

SHA256_PATTERN = r"^[0-9a-f]{64}\Z"
EVENT_PATTERN = r"^(\*|[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?)\Z"
ENV_NAME_PATTERN = r"^[A-Z][A-Z0-9_]{0,127}\Z"
ROLE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}\Z"


class ApiToken(StrictModel):
    """One caller of the API: exactly one of `person` (acts as them) or `role`."""

    sha256: Annotated[str, StringConstraints(pattern=SHA256_PATTERN)]
    person: Annotated[int, Field(gt=0)] | None = None
    role: Annotated[str, StringConstraints(pattern=ROLE_PATTERN)] | None = None


class Webhook(StrictModel):
    url: HttpUrl
    events: list[Annotated[str, StringConstraints(pattern=EVENT_PATTERN)]] = Field(min_length=1)
    secret_env: Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]
    timeout_s: float = Field(default=10, gt=0, le=120)
    backoff_s: float = Field(default=5, gt=0, le=3600)  # the first retry's wait; doubles
    backoff_max_s: float = Field(default=600, gt=0, le=86400)  # the cap on one wait
    max_attempts: int = Field(default=20, ge=1, le=1000)
    max_age_h: float = Field(default=48, gt=0, le=24 * 30)  # from the event, then given up

    def wants(self, kind: str) -> bool:
        """Whether an event of this kind ("deploy.state") goes to this subscriber."""
        for pattern in self.events:
            if pattern == "*" or pattern == kind:
                return True
            if pattern.endswith(".*") and kind.startswith(pattern[:-1]):
                return True
        return False


class Dashboard(StrictModel):
    url: HttpUrl
    miniapp_link: HttpUrl | None = None
    auth_max_age_s: int = Field(default=3600, ge=30, le=7 * 86400)
    login_link_ttl_s: int = Field(default=300, ge=30, le=86400)
    session_ttl_s: int = Field(default=43200, ge=300, le=30 * 86400)

    @property
    def page(self) -> str:
        """The page's URL with its trailing slash."""
        text = str(self.url)
        return text if text.endswith("/") else text + "/"

    @property
    def opens_in_telegram(self) -> bool:
        """Telegram opens only https pages as Mini Apps (web_app buttons, the menu button)."""
        return self.url.scheme == "https"


def check_integrations(
    api_tokens: dict[str, ApiToken], people: dict[int, str], roles: dict[str, list[int]]
) -> list[str]:
    problems: list[str] = []
    seen: dict[str, str] = {}
    for name, token in api_tokens.items():
        path = f"api_tokens.{name}"
        if (token.person is None) == (token.role is None):
            problems.append(f"{path}: give exactly one of person, role")
        if token.person is not None and token.person not in people:
            problems.append(f"{path}.person: {token.person} is not in [people]")
        if token.role is not None and token.role not in roles:
            problems.append(f"{path}.role: unknown role {token.role!r}")
        if token.sha256 in seen:
            problems.append(f"{path}.sha256: the same token as api_tokens.{seen[token.sha256]}")
        seen.setdefault(token.sha256, name)
    return problems
