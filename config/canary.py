"""A canary release's plan: traffic steps, who splits the traffic, and how the new version is
judged against the stable one at each step.

    [services.web.deploy]
    strategy = "canary"
    [services.web.deploy.blue_green]      # the two slots (ports, health, upstream, reload)
    [services.web.deploy.canary]
    steps = [5, 25, 50, 100]              # or [{ weight = 5, duration_s = 120 }, ...]
    step_s = 60                           # for steps given as a bare weight
    router = "haproxy"                    # or "nginx" (upstream weights + reload)
    [services.web.deploy.canary.haproxy]
    admin = "127.0.0.1:9999"              # HAProxy's admin socket, TCP or a unix path
    [services.web.deploy.canary.analysis]
    prometheus_url = "http://127.0.0.1:9090"
    max_error_ratio = 0.05                # the seeds: 5% errors, 5 s responses
    errors_vs_stable = { factor = 1.5, plus = 0.005 }
    [services.web.deploy.canary.shadow]   # optional: mirrored traffic before any weight
    duration_s = 60
    mirror_file = "/etc/nginx/opsgate-mirror.conf"
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, HttpUrl, StringConstraints

from config.strict import StrictModel

FILE_PATH_PATTERN = r"^/[A-Za-z0-9_./@+,-]{1,255}\Z"
# host:port for a TCP admin socket, or an absolute unix socket path.
ADMIN_PATTERN = r"^(?:[A-Za-z0-9.-]{1,253}:[0-9]{1,5}|/[A-Za-z0-9_./@+,-]{1,255})\Z"
HAPROXY_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}\Z"
# What a query may contain besides PromQL: the placeholders below, nothing that needs escaping.
PLACEHOLDERS = ("{instance}", "{window}", "{color}", "{port}")

Query = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
FilePath = Annotated[str, StringConstraints(pattern=FILE_PATH_PATTERN)]
HaproxyName = Annotated[str, StringConstraints(pattern=HAPROXY_NAME_PATTERN)]


class CanaryStep(StrictModel):
    weight: int = Field(ge=1, le=100)  # the canary's share of requests, in percent
    duration_s: float | None = Field(default=None, ge=0, le=86_400)  # None: the plan's step_s


def _step(value: object) -> object:
    return {"weight": value} if isinstance(value, int) and not isinstance(value, bool) else value


class RelativeLimit(StrictModel):
    """The canary may be at most `factor` times the stable version's value plus `plus`."""

    factor: float = Field(default=1.5, ge=1, le=100)
    plus: float = Field(default=0.0, ge=0)

    def limit(self, stable: float) -> float:
        return stable * self.factor + self.plus


class Queries(StrictModel):
    """PromQL per side; {instance} is the side's instance label ({port} its port, {color}
    blue or green), {window} the analysis window ("30s"). Counts are summed over the window;
    the ratio of errors is computed by opsgate, so an idle side is 'no traffic', not NaN."""

    requests: Query = 'sum(increase(http_requests_total{instance="{instance}"}[{window}]))'
    errors: Query = (
        'sum(increase(http_requests_total{instance="{instance}",code=~"5.."}[{window}]))'
    )
    latency_p95_s: Query = (
        "histogram_quantile(0.95, sum by (le) "
        '(rate(http_request_duration_seconds_bucket{instance="{instance}"}[{window}])))'
    )
    memory_mib: Query = 'max(process_resident_memory_bytes{instance="{instance}"}) / 1048576'


class Analysis(StrictModel):
    """Where the numbers come from, and the limits a canary must stay within."""

    source: Literal["prometheus", "nginx"] = "prometheus"
    prometheus_url: HttpUrl | None = None
    instance: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.:\[\]{}_-]{1,200}\Z")] = (
        "127.0.0.1:{port}"
    )
    queries: Queries = Queries()
    # source = "nginx": an access log on opsgate's machine in this format (see the README):
    #   log_format opsgate_canary '$msec|$upstream_addr|$status|$upstream_response_time';
    access_log: FilePath | None = None
    window_s: float = Field(default=30, ge=2, le=3600)
    min_requests: int = Field(default=20, ge=1, le=1_000_000)  # per side, per window
    max_error_ratio: float | None = Field(default=0.05, gt=0, le=1)
    max_latency_p95_s: float | None = Field(default=5.0, gt=0, le=600)
    max_memory_mib: float | None = Field(default=None, gt=0)
    errors_vs_stable: RelativeLimit | None = None
    latency_vs_stable: RelativeLimit | None = None
    memory_vs_stable: RelativeLimit | None = None
    timeout_s: float = Field(default=5, gt=0, le=60)  # per query


class HaproxyRouter(StrictModel):
    """HAProxy's runtime API sets server weights live: no reload, no connection closed."""

    admin: Annotated[str, StringConstraints(pattern=ADMIN_PATTERN)]
    backend: HaproxyName = "app"
    blue: HaproxyName = "blue"  # the server names of the two slots in that backend
    green: HaproxyName = "green"


class Shadow(StrictModel):
    """nginx `mirror`: the new version gets a copy of every request; its answers are dropped.

    opsgate writes `mirror_file` (include it inside the `server` block) and reloads nginx at
    the start and the end of the phase; between them the file is empty."""

    duration_s: float = Field(default=60, gt=0, le=86_400)
    mirror_file: FilePath
    address: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.:\[\]-]{1,253}\Z")] = (
        "127.0.0.1"
    )
    timeout_s: float = Field(default=2, gt=0, le=60)  # a slow shadow must not hold clients


class CanaryConfig(StrictModel):
    steps: list[Annotated[CanaryStep, BeforeValidator(_step)]] = Field(min_length=1, max_length=20)
    step_s: float = Field(default=60, ge=0, le=86_400)
    interval_s: float = Field(default=10, gt=0, le=600)  # one analysis per interval
    # A step whose traffic stays too thin to judge fails after this long (it never passes).
    traffic_timeout_s: float = Field(default=300, gt=0, le=86_400)
    router: Literal["nginx", "haproxy"] = "nginx"
    haproxy: HaproxyRouter | None = None
    # nginx: the blue_green upstream_file is rewritten with both servers and their weights.
    upstream_template: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = (
        "upstream {service} {\n{servers}}\n"
    )
    server_template: Annotated[str, StringConstraints(min_length=1, max_length=500)] = (
        "    server 127.0.0.1:{port} weight={weight};\n"
    )
    analysis: Analysis
    shadow: Shadow | None = None

    def duration_of(self, step: CanaryStep) -> float:
        return self.step_s if step.duration_s is None else step.duration_s


def check_canary(path: str, canary: CanaryConfig) -> list[str]:
    """What pydantic's field checks cannot see: the plan as a whole, and what goes with what."""
    problems: list[str] = []
    weights = [step.weight for step in canary.steps]
    if weights[-1] != 100:
        problems.append(
            f"{path}.steps: the plan must end at 100 (it ends at {weights[-1]}), where the"
            " canary becomes the stable version"
        )
    if any(b <= a for a, b in itertools.pairwise(weights)):
        problems.append(f"{path}.steps: weights must rise step by step ({weights})")
    if canary.router == "haproxy" and canary.haproxy is None:
        problems.append(f'{path}.haproxy: required with router = "haproxy"')
    if canary.router != "haproxy" and canary.haproxy is not None:
        problems.append(f'{path}.haproxy: only used with router = "haproxy"')
    if canary.router == "nginx":
        for key in ("{servers}",):
            if key not in canary.upstream_template:
                problems.append(f"{path}.upstream_template: must contain {key}")
        for key in ("{port}", "{weight}"):
            if key not in canary.server_template:
                problems.append(f"{path}.server_template: must contain {key}")
    analysis = canary.analysis
    where = f"{path}.analysis"
    if analysis.source == "prometheus" and analysis.prometheus_url is None:
        problems.append(f'{where}.prometheus_url: required with source = "prometheus"')
    if analysis.source == "nginx":
        if analysis.access_log is None:
            problems.append(f'{where}.access_log: required with source = "nginx"')
        if analysis.max_memory_mib is not None or analysis.memory_vs_stable is not None:
            problems.append(f"{where}: memory limits need Prometheus (nginx does not see memory)")
    for name, query in analysis.queries.model_dump().items():
        stray = set(re.findall(r"\{[a-z_]+\}", query)) - set(PLACEHOLDERS)
        if stray:
            problems.append(
                f"{where}.queries.{name}: unknown placeholder {', '.join(sorted(stray))}"
                f" (known: {', '.join(PLACEHOLDERS)})"
            )
    limits = (analysis.max_error_ratio, analysis.max_latency_p95_s, analysis.max_memory_mib)
    relative = (analysis.errors_vs_stable, analysis.latency_vs_stable, analysis.memory_vs_stable)
    if all(limit is None for limit in (*limits, *relative)):
        problems.append(f"{where}: give at least one limit, or nothing can fail the canary")
    if canary.shadow is not None and canary.router != "nginx":
        problems.append(f'{path}.shadow: needs router = "nginx" (its mirror copies requests)')
    return problems
