"""What a staged plan must see before it may go on: the flag's service running and healthy,
and, when configured, an error rate under its threshold.

A critical alert for the service firing in the team's Alertmanager holds the plan too;
opsgate's own alerts join this gate when its alert engine lands.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import httpx

from config.inventory import ErrorRateGate
from config.opsfile import OpsConfig
from services.alerts.alertmanager import AlertmanagerClient, AlertmanagerUnavailable
from services.control.controller import ServiceController
from services.flags.plans import GateVerdict, Phase
from services.flags.usage import EvaluationTally


def sum_samples(text: str, name: str, match: dict[str, str] | None = None) -> float:
    """The sum of every sample called `name` whose labels fullmatch the given regexes."""
    from prometheus_client.parser import text_string_to_metric_families  # only when gated

    patterns = {label: re.compile(regex) for label, regex in (match or {}).items()}
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != name:
                continue
            if all(p.fullmatch(sample.labels.get(k, "")) for k, p in patterns.items()):
                total += sample.value
    return total


class ErrorRateWatch:
    """Counters are totals since start: the rate is the change between two readings."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http
        self._last: dict[str, tuple[float, float]] = {}  # flag -> (errors, total)

    async def check(self, flag_key: str, gate: ErrorRateGate) -> GateVerdict:
        try:
            response = await self._http.get(str(gate.url), timeout=gate.timeout_s)
            response.raise_for_status()
            errors = sum_samples(response.text, gate.errors, gate.errors_match)
            total = sum_samples(response.text, gate.total)
        except (httpx.HTTPError, ValueError) as exc:
            return GateVerdict(False, f"metrics unreadable at {gate.url}: {exc}")
        previous = self._last.get(flag_key)
        self._last[flag_key] = (errors, total)
        if previous is None:
            return GateVerdict(True)  # the first reading is only a baseline
        d_errors, d_total = errors - previous[0], total - previous[1]
        if d_total <= 0 or d_errors < 0:  # no traffic, or the service restarted its counters
            return GateVerdict(True)
        ratio = d_errors / d_total
        if ratio > gate.max_ratio:
            return GateVerdict(
                False,
                f"error rate {ratio:.1%} over {gate.max_ratio:.0%} ({d_errors:g}/{d_total:g})",
            )
        return GateVerdict(True)


class FlagGate:
    """The gate PlanService asks before each step and at every check in between."""

    def __init__(
        self,
        ops: Callable[[], OpsConfig],
        controller: Callable[[], ServiceController],
        http: httpx.AsyncClient,
    ) -> None:
        self._ops = ops
        self._controller = controller
        self._http = http
        self._errors = ErrorRateWatch(http)

    async def __call__(self, flag_key: str) -> GateVerdict:
        declared = self._ops().flags.get(flag_key)
        if declared is None:
            return GateVerdict(True)  # nothing to watch: the plan runs on its schedule
        if declared.service is not None:
            for check in (self._alerts, self._service):
                verdict = await check(declared.service)
                if not verdict.ok:
                    return verdict
        if declared.error_rate is not None:
            return await self._errors.check(flag_key, declared.error_rate)
        return GateVerdict(True)

    async def _alerts(self, name: str) -> GateVerdict:
        config = self._ops().alertmanager
        if config is None:
            return GateVerdict(True)
        client = AlertmanagerClient(self._http, str(config.url))
        labels = {config.service_label: name, config.severity_label: config.critical}
        try:
            firing = await client.firing(labels)
        except AlertmanagerUnavailable as exc:
            return GateVerdict(False, str(exc))  # unknown is not healthy: hold the plan
        if firing:
            names = ", ".join(sorted({alert.name for alert in firing}))
            return GateVerdict(False, f"critical alert firing for {name}: {names}")
        return GateVerdict(True)

    async def _service(self, name: str) -> GateVerdict:
        """Every host of the service's last environment in promotion order (where flags
        meet users: production) must be running and healthy."""
        controller = self._controller()
        environment = controller.service(name).environment_names()[-1]
        for state in await controller.fleet_state(name, environment):
            where = f"{name} on {state.host}" if state.host != controller.host_of(name) else name
            if state.error is not None:
                return GateVerdict(False, f"{where}: {state.error}")
            if not state.running:
                return GateVerdict(False, f"{where} is {state.state}")
            if state.health is not None and not state.health.ok:
                return GateVerdict(False, f"{where} health: {state.health.reason}")
        return GateVerdict(True)


class PlanCriteria:
    """A phase's own criteria (services/flags/plans.Phase), read at every plan check: its
    error ratio from the flag's error_rate source, its query from the plan's Prometheus, and
    the evaluations served (from the flag source's tally)."""

    def __init__(
        self, ops: Callable[[], OpsConfig], http: httpx.AsyncClient, tally: EvaluationTally
    ) -> None:
        self._ops = ops
        self._http = http
        self._tally = tally
        self._errors = ErrorRateWatch(http)  # its own readings: the gate keeps its own too

    def evaluations(self, flag_key: str) -> int:
        return self._tally.flag_total(flag_key)

    async def breach(self, flag_key: str, phase: Phase) -> str | None:
        declared = self._ops().flags.get(flag_key)
        if phase.max_error_ratio is not None:
            if declared is None or declared.error_rate is None:
                return "max_error_ratio set, but the flag has no error_rate source to read"
            gate = declared.error_rate.model_copy(update={"max_ratio": phase.max_error_ratio})
            verdict = await self._errors.check(flag_key, gate)
            if not verdict.ok:
                return verdict.reason
        if phase.query is not None and phase.query_max is not None:
            plan = declared.plan if declared is not None else None
            if plan is None or plan.prometheus_url is None:
                return "the phase's query has no prometheus_url to ask"
            return await self._query(str(plan.prometheus_url), phase.query, phase.query_max)
        return None

    async def _query(self, url: str, query: str, limit: float) -> str | None:
        """A breach's reason when the query's value passes `limit`; no data is no breach,
        a Prometheus that cannot be asked holds the plan (unknown is not healthy)."""
        endpoint = url.rstrip("/") + "/api/v1/query"
        try:
            response = await self._http.get(endpoint, params={"query": query}, timeout=5.0)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return f"Prometheus did not answer at {url}: {exc}"
        if response.status_code != 200 or body.get("status") != "success":
            return f"Prometheus refused {query!r}: {body.get('error', response.status_code)}"
        result = body["data"]["result"]
        if body["data"].get("resultType") == "scalar":
            value = float(result[1])
        elif result:
            value = max(float(item["value"][1]) for item in result)
        else:
            return None
        if math.isnan(value) or value <= limit:
            return None
        return f"{query} = {value:g}, over {limit:g}"
