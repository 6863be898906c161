"""What each outbox row becomes as a message: the decisions behind alert delivery.

Who is mentioned (the route's `mention_role`), who an escalation reaches (the on-call role in
private chats, else the backup role in the group), which recent deploy or flag change sits
next to a group, whether a group message is edited or sent anew: all decided here, so the
chat side (bot/alert_notifier.py) only renders and sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config.alerts import AlertRoute
from config.opsfile import OpsConfig
from services.alerts.changes import RecentChanges, RecentDeploy, RecentFlagChange
from services.alerts.engine import AlertEngine, routes_of
from services.alerts.links import Link, alert_links, details, fill_template, silence_link
from services.alerts.model import Alert, AlertGroup, Silence
from services.alerts.outbox import Delivery


@dataclass(frozen=True)
class Digest:
    """Many alerts in one message (or as many parts as it takes to name them all)."""

    chat_id: int
    alerts: list[Alert]
    silences: list[Silence]
    silent: bool


@dataclass(frozen=True)
class GroupMessage:
    """A group's own message: sent anew, or edited in place when `edit_message_id` is set."""

    chat_id: int
    group: AlertGroup
    kind: str  # notify | update | repeat
    silences: list[Silence]
    deploy: RecentDeploy | None
    flag: RecentFlagChange | None
    mention: list[int]  # user ids to mention under it
    edit_message_id: int | None
    silent: bool
    opening: str = ""  # the route's template, filled (plain text: the chat side escapes it)
    details: str = ""  # the description the alerts share (plain text)
    links: tuple[Link, ...] = ()  # runbooks, dashboards, sources, then Alertmanager's silence


@dataclass(frozen=True)
class Backup:
    """An unacknowledged critical, said again in its group chat to the backup role."""

    chat_id: int
    group: AlertGroup
    mention: list[int]


@dataclass(frozen=True)
class Escalation:
    """An unacknowledged critical, to each on-call person privately; `backup` if none is
    reachable."""

    group: AlertGroup
    oncall: list[int]
    backup: Backup


AlertMessage = Digest | GroupMessage | Escalation | Backup


def service_of(group: AlertGroup) -> str | None:
    return next((a.labels["service"] for a in group.alerts if a.labels.get("service")), None)


class AlertMessages:
    def __init__(
        self, engine: AlertEngine, changes: RecentChanges, ops: Callable[[], OpsConfig]
    ) -> None:
        self._engine, self._changes, self._ops = engine, changes, ops

    async def changes_for(
        self, group: AlertGroup
    ) -> tuple[RecentDeploy | None, RecentFlagChange | None]:
        """The deploy and flag change of the last hour for the group's service, if any."""
        service = service_of(group)
        if service is None:
            return None, None
        return await self._changes.deploy(service), await self._changes.flag(service)

    async def message_for(self, delivery: Delivery) -> AlertMessage | None:
        """What to send for this outbox row; None when its group is gone."""
        silences = await self._engine.silences()
        if delivery.kind == "digest" or delivery.group_id is None:
            found = await self._engine.alerts(delivery.fingerprints)
            return Digest(delivery.chat_id, found, silences, delivery.silent)
        group = await self._engine.group(delivery.group_id)
        if group is None:
            return None
        if delivery.kind == "escalate":
            ops = self._ops()
            oncall = list(ops.roles.get(ops.alerts.oncall_role or "", []))
            return Escalation(group, oncall, self._backup(group))
        if delivery.kind == "backup":
            return self._backup(group)
        deploy, flag = await self.changes_for(group)
        editing = delivery.kind == "update" and group.message_id is not None
        return GroupMessage(
            delivery.chat_id,
            group,
            delivery.kind,
            silences,
            deploy,
            flag,
            self._mentions(group, delivery.kind),
            group.message_id if editing else None,
            delivery.silent,
            *self.extras_for(group),
        )

    def extras_for(self, group: AlertGroup) -> tuple[str, str, tuple[Link, ...]]:
        """The group's filled route template, shared description and links (a redraw of its
        message wants them too)."""
        ops = self._ops()
        route = self._route(group)
        opening = fill_template(route.template, group) if route and route.template else ""
        links = alert_links(group)
        if ops.alertmanager is not None:
            silence = silence_link(group, str(ops.alertmanager.url))
            links += [silence] if silence else []
        return opening, "" if opening else details(group), tuple(links)

    def _route(self, group: AlertGroup) -> AlertRoute | None:
        routes = routes_of(self._ops())
        return routes[group.route] if 0 <= group.route < len(routes) else None

    def _mentions(self, group: AlertGroup, kind: str) -> list[int]:
        """The route's mention_role, when a group (still) fires and this is not an edit."""
        route = self._route(group)
        if route is None or not route.mention_role or not group.firing or kind == "update":
            return []
        return list(self._ops().roles.get(route.mention_role, []))

    def _backup(self, group: AlertGroup) -> Backup:
        ops = self._ops()
        role = ops.alerts.backup_role or ops.alerts.oncall_role or ""
        return Backup(group.chat_id, group, list(ops.roles.get(role, [])))
