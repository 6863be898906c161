"""A deployment's whole trail for auditors: the request, its sign-off (every tick, piece of
evidence, approval and rejection) and every pipeline event, with user ids, names and UTC
times; as JSON (the structure) and CSV (one row per event)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from config.opsfile import OpsConfig
from services.approvals.model import ApprovalRequest, Item, RoleSignoff
from services.approvals.signoff import Approvals
from services.deploy.deployments import Deployments
from services.deploy.model import deployment_json
from services.records.audit import Event, event_from_row
from services.records.storage import Storage

CSV_COLUMNS = ("at", "kind", "actor_id", "actor_name", "role", "item", "detail")


def _time(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


class AuditExport:
    def __init__(
        self,
        storage: Storage,
        deployments: Deployments,
        approvals: Approvals,
        ops: Callable[[], OpsConfig],
    ) -> None:
        self._storage = storage
        self._deployments = deployments
        self._approvals = approvals
        self._ops = ops

    def _person(self, user_id: str | None) -> dict[str, str | None] | None:
        if user_id is None:
            return None
        name = self._ops().name_of(int(user_id)) if user_id.isdigit() else None
        return {"id": user_id, "name": name or user_id}

    async def events(self, deployment_id: int) -> list[Event]:
        # Compared as text: SQLite reads the JSON number as an integer, PostgreSQL as text.
        rows = await self._storage.db.execute_fetchall(
            "SELECT id, at, kind, actor, subject, data FROM events"
            " WHERE CAST(json_extract(data, '$.deployment') AS TEXT)"
            " = CAST(? AS TEXT) ORDER BY id",
            (deployment_id,),
        )
        return [event_from_row(row) for row in rows]

    async def trail(self, deployment_id: int) -> dict[str, Any]:
        """Raises UnknownDeployment for an id that was never used."""
        d = await self._deployments.get(deployment_id)
        request = await self._approvals.for_deployment(deployment_id)
        return {
            "deployment": deployment_json(d)
            | {
                "requested_by": self._person(d.requested_by),
                "created_at": _time(d.created_at),
                "finished_at": _time(d.finished_at),
            },
            "signoff": None if request is None else self._signoff(request),
            "events": [
                {
                    "at": _time(e.at),
                    "kind": e.kind,
                    "actor": self._person(e.actor),
                    "data": e.data,
                }
                for e in await self.events(deployment_id)
            ],
        }

    def _signoff(self, request: ApprovalRequest) -> dict[str, Any]:
        return {
            "request": request.id,
            "status": request.status.value,
            "requester": self._person(request.requester),
            "any_role": request.any_role,
            "created_at": _time(request.created_at),
            "expires_at": _time(request.expires_at),
            "ended_at": _time(request.ended_at),
            "ended_by": self._person(request.ended_by),
            "reason": request.reason or None,
            "roles": [self._role(role) for role in request.roles],
        }

    def _role(self, role: RoleSignoff) -> dict[str, Any]:
        return {
            "role": role.role,
            "needed": role.needed,
            "met": role.met,
            "votes": [
                {
                    "decision": v.decision,
                    "by": self._person(v.user_id),
                    "at": _time(v.at),
                    "reason": v.reason or None,
                }
                for v in role.votes
            ],
            "items": [self._item(item) for item in role.items],
        }

    def _item(self, item: Item) -> dict[str, Any]:
        return {
            "key": item.key,
            "text": item.text,
            "required": item.required,
            "ticked_by": self._person(item.ticked_by),
            "ticked_at": _time(item.ticked_at),
            "evidence": [
                {
                    "kind": e.kind,
                    "content": e.content,
                    "file_id": e.file_id,
                    "by": self._person(e.user_id),
                    "at": _time(e.at),
                }
                for e in item.evidence
            ],
        }


def trail_json(trail: dict[str, Any]) -> bytes:
    return json.dumps(trail, indent=2, ensure_ascii=False).encode()


def trail_csv(trail: dict[str, Any]) -> bytes:
    """One row per event, oldest first; `detail` holds the rest of the event's data."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for event in trail["events"]:
        data = dict(event["data"])
        role, item = data.pop("role", ""), data.pop("item", "")
        for key in ("deployment", "request"):
            data.pop(key, None)
        actor = event["actor"] or {"id": "", "name": ""}
        detail = json.dumps(data, ensure_ascii=False, sort_keys=True) if data else ""
        row = (event["at"], event["kind"], actor["id"], actor["name"], role, item, detail)
        writer.writerow([_cell(value) for value in row])
    return out.getvalue().encode()


def _cell(value: object) -> str:
    """Text a spreadsheet would run as a formula (=, +, -, @) is kept as text."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@") else text
