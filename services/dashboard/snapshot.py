"""What the dashboard shows one person: a JSON-ready snapshot of the running state.

Services (per environment and host), deployments in flight with their live steps, history
(filtered), sign-offs waiting with each role's checklist, alerts firing with their ack, flags
with their rollout and plan, and the DORA figures. `may` says which actions the person's roles
allow, so the page shows only buttons that would work (the server checks again on each write).

Host states cost health checks and DORA a scan of the deployments table: both are cached for
a few seconds and shared by every viewer, so a page polling every 1.5 s costs database reads
only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from config.opsfile import OpsConfig
from config.permissions import Action
from services.alerts.model import AlertGroup
from services.approvals.model import ApprovalRequest
from services.container import Services
from services.deploy.model import Deployment, deployment_json
from services.deploy.placements import Placement
from services.reports.dora import TARGETS, DoraReport, meets

log = logging.getLogger(__name__)

PLACEMENTS_TTL_S = 5.0
DORA_TTL_S = 60.0
DORA_WINDOW_DAYS = 30
HISTORY_LIMIT = 20
HISTORY_SCAN = 500  # rows read to filter history by environment or state

T = TypeVar("T")


@dataclass(frozen=True)
class HistoryFilter:
    service: str | None = None
    environment: str | None = None
    state: str | None = None
    limit: int = HISTORY_LIMIT

    def keeps(self, d: Deployment) -> bool:
        return (self.environment is None or d.environment == self.environment) and (
            self.state is None or d.state.value == self.state
        )


class _Cached:
    """One value, recomputed at most every `ttl_s`. Once there is a value, a reader never
    waits: a stale one is answered while one refresh runs in the background."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._value: Any = None
        self._at: float | None = None
        self._refresh: asyncio.Task[None] | None = None

    async def get(self, compute: Callable[[], Awaitable[T]]) -> T:
        if self._at is None:
            await self._compute(compute)
        elif time.monotonic() - self._at >= self._ttl_s and (
            self._refresh is None or self._refresh.done()
        ):
            self._refresh = asyncio.create_task(self._refresh_quietly(compute))
        value: T = self._value
        return value

    async def _compute(self, compute: Callable[[], Awaitable[T]]) -> None:
        self._value = await compute()
        self._at = time.monotonic()

    async def _refresh_quietly(self, compute: Callable[[], Awaitable[T]]) -> None:
        try:
            await self._compute(compute)
        except Exception:  # the stale value stays; the next reader tries again
            log.warning("dashboard: a background refresh failed", exc_info=True)


class DashboardView:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._placements = _Cached(PLACEMENTS_TTL_S)
        self._dora = _Cached(DORA_TTL_S)

    async def snapshot(self, person: int, where: HistoryFilter) -> dict[str, Any]:
        services = self._services
        ops = services.ops
        placements = await self._placements.get(services.placements)
        in_flight = await services.deployments.in_flight()
        scan = where.limit if where.environment is None and where.state is None else HISTORY_SCAN
        history = await services.deployments.history(where.service, scan)
        requests = await services.approvals.open_requests()
        groups = await services.alerts.firing_groups()
        flags = await services.flags.all()
        plans = {plan.flag_key: plan for plan in await services.plans.active()}
        dora = await self._dora.get(self._dora_figures)
        return {
            "person": {"id": person, "name": ops.name_of(person) or str(person)},
            "may": may(ops, person),
            "services": [placement_json(p) for p in placements],
            "deployments": [self._deployment(d, steps=True) for d in in_flight],
            "history": [self._deployment(d) for d in history if where.keeps(d)][: where.limit],
            "signoffs": [signoff_json(r, ops, person) for r in requests],
            "alerts": [alert_json(g, ops) for g in groups],
            "flags": [
                {
                    "key": f.key,
                    "description": f.description,
                    "enabled": f.enabled,
                    "killed": f.killed,
                    "rollout_percent": f.rollout_percent,
                    "split": {name: weight for name, weight in f.split},
                    "plan": None
                    if (plan := plans.get(f.key)) is None
                    else {
                        "steps": list(plan.steps),
                        "index": plan.index,
                        "state": str(plan.state),
                        "next_at": plan.next_at.isoformat() if plan.next_at else None,
                    },
                }
                for f in flags
            ],
            "dora": dora,
            "filters": {
                "services": sorted(ops.services),
                "environments": sorted(ops.environments),
            },
        }

    def _deployment(self, d: Deployment, steps: bool = False) -> dict[str, Any]:
        item = deployment_json(d)
        item["requested_by"] = _name(self._services.ops, d.requested_by)
        if steps:
            progress = self._services.runtime.progress_of.get(d.id)
            item["steps"] = [
                {
                    "title": s.title,
                    "status": s.status.value,
                    "detail": s.detail,
                    "seconds": round(s.duration_s, 2),
                }
                for s in (progress.steps if progress is not None else [])
            ]
        return item

    async def _dora_figures(self) -> dict[str, Any]:
        services = self._services
        report = DoraReport(services.storage, services.clock)
        figures = await report.figures(DORA_WINDOW_DAYS)
        days = await report.per_day(14)
        return {
            "window_days": DORA_WINDOW_DAYS,
            "figures": [
                {
                    "service": f.service,
                    "deploys": f.deploys,
                    "failed_changes": f.failed_changes,
                    "deployments_per_day": round(f.deployments_per_day, 2),
                    "lead_time_s": f.lead_time_s,
                    "change_failure_rate": f.change_failure_rate,
                    "time_to_restore_s": f.time_to_restore_s,
                    "targets": {t.field: meets(t, f) for t in TARGETS},
                }
                for f in figures
            ],
            "targets": [{"name": t.name, "field": t.field, "text": t.text} for t in TARGETS],
            "days": [
                {
                    "day": d.day,
                    "succeeded": d.succeeded,
                    "failed": d.failed,
                    "rolled_back": d.rolled_back,
                }
                for d in days
            ],
        }


def may(ops: OpsConfig, person: int) -> dict[str, Any]:
    """The actions this person's roles allow; `approve_as` lists the roles they sign for."""
    return {
        "ack": ops.may(person, Action.ACK),
        "abort": ops.may(person, Action.CONTROL),
        "approve_as": sorted(ops.roles_of(person)),
    }


def placement_json(p: Placement) -> dict[str, Any]:
    return {
        "service": p.service,
        "environment": p.environment,
        "version": p.version,
        "hosts": [
            {
                "host": s.host,
                "version": p.versions.get(s.host),
                "state": s.state,
                "running": s.running,
                "health": None
                if s.health is None
                else {"ok": s.health.ok, "reason": s.health.reason},
                "error": s.error,
            }
            for s in p.states
        ],
        "healthy": len(p.healthy),
    }


def signoff_json(r: ApprovalRequest, ops: OpsConfig, person: int) -> dict[str, Any]:
    mine = ops.roles_of(person)
    return {
        "id": r.id,
        "deployment_id": r.deployment_id,
        "requested_by": _name(ops, r.requester),
        "own": r.requester == str(person),
        "any_role": r.any_role,
        "expires_at": r.expires_at.isoformat(),
        "roles": [
            {
                "id": role.id,
                "role": role.role,
                "needed": role.needed,
                "met": role.met,
                "mine": role.role in mine,
                "approvals": [_name(ops, v.user_id) for v in role.approvals],
                "items": [
                    {
                        "id": item.id,
                        "text": item.text,
                        "required": item.required,
                        "ticked_by": _name(ops, item.ticked_by) if item.ticked_by else None,
                        "evidence": len(item.evidence),
                    }
                    for item in role.items
                ],
            }
            for role in r.roles
        ],
    }


def alert_json(g: AlertGroup, ops: OpsConfig) -> dict[str, Any]:
    return {
        "id": g.id,
        "severity": g.severity,
        "labels": dict(g.labels),
        "acked_by": _name(ops, g.acked_by) if g.acked_by else None,
        "firing_since": g.firing_since.isoformat() if g.firing_since else None,
        "alerts": [
            {
                "name": a.name,
                "summary": a.annotations.get("summary", ""),
                "starts_at": a.starts_at.isoformat(),
            }
            for a in g.firing
        ],
    }


def _name(ops: OpsConfig, actor: str) -> str:
    return ops.name_of_actor(actor) or actor
