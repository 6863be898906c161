"""Reading sign-off requests from their tables into services/approvals/model.py's types."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from services.approvals.model import (
    ApprovalRequest,
    ButtonNoLongerValid,
    Evidence,
    Item,
    RequestStatus,
    RoleSignoff,
    Vote,
)
from services.records.storage import Connection

_REQUEST_COLUMNS = (
    "id, deployment_id, requester, status, any_role, origin_chat_id, origin_message_id,"
    " chat_id, message_id, created_at, remind_at, escalate_at, expires_at, reminded,"
    " escalated, ended_at, ended_by, reason"
)


def _time(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _at(value: object) -> datetime:
    return datetime.fromisoformat(str(value))


async def request_id_of_role(db: Connection, role_id: int) -> int:
    rows = list(
        await db.execute_fetchall("SELECT request_id FROM approval_roles WHERE id = ?", (role_id,))
    )
    if not rows:
        raise ButtonNoLongerValid()
    return int(rows[0][0])


async def read_request(db: Connection, request_id: int) -> ApprovalRequest | None:
    rows = list(
        await db.execute_fetchall(
            f"SELECT {_REQUEST_COLUMNS} FROM approval_requests WHERE id = ?",  # noqa: S608
            (request_id,),
        )
    )
    if not rows:
        return None
    row = rows[0]
    evidence: dict[int, list[Evidence]] = defaultdict(list)
    for e in await db.execute_fetchall(
        "SELECT id, item_id, user_id, kind, content, file_id, at FROM approval_evidence"
        " WHERE request_id = ? AND item_id IS NOT NULL ORDER BY id",
        (request_id,),
    ):
        item_id = int(e[1])
        evidence[item_id].append(
            Evidence(int(e[0]), item_id, str(e[2]), str(e[3]), str(e[4]), e[5], _at(e[6]))
        )
    roles = []
    for r in await db.execute_fetchall(
        "SELECT id, role, needed FROM approval_roles WHERE request_id = ? ORDER BY position",
        (request_id,),
    ):
        role_id = int(r[0])
        items = tuple(
            Item(
                int(i[0]),
                str(i[1]),
                str(i[2]),
                bool(i[3]),
                None if i[4] is None else str(i[4]),
                _time(i[5]),
                tuple(evidence.get(int(i[0]), ())),
            )
            for i in await db.execute_fetchall(
                "SELECT id, item_key, text, required, ticked_by, ticked_at FROM approval_items"
                " WHERE role_id = ? ORDER BY position",
                (role_id,),
            )
        )
        votes = tuple(
            Vote(str(v[0]), str(v[1]), str(v[2]), _at(v[3]))
            for v in await db.execute_fetchall(
                "SELECT user_id, decision, reason, at FROM approval_votes WHERE role_id = ?"
                " ORDER BY id",
                (role_id,),
            )
        )
        roles.append(RoleSignoff(role_id, str(r[1]), int(r[2]), items, votes))
    return ApprovalRequest(
        id=int(row[0]),
        deployment_id=int(row[1]),
        requester=str(row[2]),
        status=RequestStatus(str(row[3])),
        any_role=bool(row[4]),
        origin_chat_id=row[5],
        origin_message_id=row[6],
        chat_id=row[7],
        message_id=row[8],
        created_at=_at(row[9]),
        remind_at=_at(row[10]),
        escalate_at=_at(row[11]),
        expires_at=_at(row[12]),
        reminded=bool(row[13]),
        escalated=bool(row[14]),
        ended_at=_time(row[15]),
        ended_by=None if row[16] is None else str(row[16]),
        reason=str(row[17]),
        roles=tuple(roles),
    )
