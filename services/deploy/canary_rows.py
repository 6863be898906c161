"""A canary rollout as rows: written before the proxy changes, so a restarted opsgate knows the
colour, the step and the weight it left, whether someone paused it, and every analysis so far.

    starting -> shadow -> steps -> promoting -> done
                                            -> back (traffic back on stable)

Each phase or step move is audited (`deploy.canary`); analyses go to their own table (one row
per interval would drown the audit log).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from enum import StrEnum

from services.control.analysis import Verdict
from services.records.audit import AuditLog, utc_now
from services.records.storage import Storage

log = logging.getLogger(__name__)


class Phase(StrEnum):
    STARTING = "starting"  # the canary colour is being started; no traffic yet
    SHADOW = "shadow"  # mirrored requests only; users are answered by stable
    STEPS = "steps"  # users' traffic is split by weight
    PROMOTING = "promoting"  # the canary is becoming the stable version
    DONE = "done"
    BACK = "back"  # traffic is back on stable: aborted, breached or failed


@dataclass(frozen=True)
class CanaryRow:
    color: str
    phase: Phase
    step: int  # index into the plan; -1 before the first
    weight: int  # the canary's share now, percent
    paused: bool


@dataclass(frozen=True)
class AnalysisRow:
    at: str
    phase: Phase
    weight: int
    verdict: str  # pass, thin, breach, or "unavailable"
    numbers: dict[str, object]


class CanaryRows:
    def __init__(self, storage: Storage, audit: AuditLog) -> None:
        self._storage = storage
        self._audit = audit
        self.hold_at_step: int | None = None  # crash drills: OPSGATE_HOLD_AT=canary.step.N

    async def start(self, deployment_id: int, color: str) -> CanaryRow:
        await self._storage.write(
            "INSERT INTO canary_rollouts (deployment_id, color, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (deployment_id) DO UPDATE SET color = excluded.color,"
            " phase = 'starting', step = -1, weight = 0, updated_at = excluded.updated_at",
            (deployment_id, color, utc_now().isoformat()),
        )
        row = await self.get(deployment_id)
        assert row is not None
        return row

    async def get(self, deployment_id: int) -> CanaryRow | None:
        rows = await self._storage.db.execute_fetchall(
            "SELECT color, phase, step, weight, paused FROM canary_rollouts"
            " WHERE deployment_id = ?",
            (deployment_id,),
        )
        for r in rows:
            return CanaryRow(
                r["color"], Phase(r["phase"]), r["step"], r["weight"], bool(r["paused"])
            )
        return None

    async def move(
        self, deployment_id: int, service: str, phase: Phase, step: int, weight: int, note: str = ""
    ) -> None:
        async with self._storage.transaction() as db:
            await db.execute(
                "UPDATE canary_rollouts SET phase = ?, step = ?, weight = ?, updated_at = ?"
                " WHERE deployment_id = ?",
                (phase.value, step, weight, utc_now().isoformat(), deployment_id),
            )
            data = {"deployment": deployment_id, "phase": phase.value, "step": step,
                    "weight": weight, "note": note}  # fmt: skip
            await self._audit.record("deploy.canary", "opsgate", service, data)
        if phase is Phase.STEPS and self.hold_at_step is not None and step + 1 == self.hold_at_step:
            log.warning(
                "deployment #%s holds at canary step %s (OPSGATE_HOLD_AT)", deployment_id, step + 1
            )
            await asyncio.Event().wait()

    async def set_paused(self, deployment_id: int, paused: bool, actor: str, service: str) -> None:
        async with self._storage.transaction() as db:
            await db.execute(
                "UPDATE canary_rollouts SET paused = ?, updated_at = ? WHERE deployment_id = ?",
                (int(paused), utc_now().isoformat(), deployment_id),
            )
            data = {"deployment": deployment_id, "paused": paused}
            await self._audit.record("deploy.canary_control", actor, service, data)

    async def record(
        self, deployment_id: int, phase: Phase, weight: int, verdict: Verdict | None, note: str = ""
    ) -> None:
        numbers: dict[str, object] = verdict.numbers() if verdict else {"note": note}
        await self._storage.write(
            "INSERT INTO canary_analyses (deployment_id, at, phase, weight, verdict, numbers)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                deployment_id,
                utc_now().isoformat(),
                phase.value,
                weight,
                verdict.word if verdict else "unavailable",
                json.dumps(numbers),
            ),
        )

    async def analyses(self, deployment_id: int) -> list[AnalysisRow]:
        rows = await self._storage.db.execute_fetchall(
            "SELECT at, phase, weight, verdict, numbers FROM canary_analyses"
            " WHERE deployment_id = ? ORDER BY id",
            (deployment_id,),
        )
        return [
            AnalysisRow(
                r["at"], Phase(r["phase"]), r["weight"], r["verdict"], json.loads(r["numbers"])
            )
            for r in rows
        ]
