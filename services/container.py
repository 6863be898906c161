"""The services a running opsgate holds, in one typed container shared by chat, HTTP and CLI."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from config.integrations import Webhook
from config.inventory import DeployConfig, FlagDecl
from config.opsfile import OpsConfig
from services.alerts.changes import RecentChanges
from services.alerts.engine import AlertEngine
from services.alerts.messages import AlertMessages
from services.alerts.monitor import Monitor
from services.alerts.outbox import Outbox
from services.alerts.scheduler import AlertScheduler
from services.alerts.silences import SilenceBook
from services.approvals.signoff import Approvals
from services.control.controller import ServiceController
from services.control.metrics import MetricsSampler
from services.dashboard.links import LoginLinks
from services.deploy.confirmations import Confirmations
from services.deploy.deployments import Deployments
from services.deploy.front_door import FrontDoor, Origin
from services.deploy.locks import EnvironmentLocks
from services.deploy.long_watch import LongWatch, LongWatches
from services.deploy.pipeline import DeployPipeline
from services.deploy.placements import Placement, placements
from services.flags.four_eyes import FourEyes
from services.flags.gates import FlagGate, PlanCriteria
from services.flags.plans import PlanService
from services.flags.serving import FlagdExporter, LiveFlagSource
from services.flags.store import FlagStore
from services.flags.types import Targeting
from services.hosts.registry import Hosts, hosts_from_config
from services.records.audit import AuditLog, utc_now
from services.records.leadership import Leadership
from services.records.retention import Retention
from services.records.storage import Storage
from services.releases.queries import ReleaseQueries
from services.reports.audit_export import AuditExport
from services.runtime import RuntimeStatus
from services.tls import client_context
from services.webhooks.delivery import WebhookSender
from services.webhooks.queue import WebhookQueue

VERSION = "0.1.0"


def _deploy_of(ops: OpsConfig, name: str) -> DeployConfig | None:
    service = ops.services.get(name)
    return service.deploy if service is not None else None


@dataclass
class Services:
    ops: OpsConfig  # replaced whole by replace_ops, never mutated in place
    ops_path: Path
    storage: Storage
    audit: AuditLog
    confirmations: Confirmations
    hosts: Hosts
    http: httpx.AsyncClient  # one pool for every health check
    sampler: MetricsSampler
    control_dir: Path  # private, short: ssh ControlPath sockets must fit in ~90 bytes
    flags: FlagStore
    plans: PlanService
    flag_source: LiveFlagSource  # what OFREP serves
    flagd: FlagdExporter
    deployments: Deployments
    env_locks: EnvironmentLocks
    releases: ReleaseQueries
    pipeline: DeployPipeline
    approvals: Approvals
    front_door: FrontDoor  # every request that changes production comes in here
    audit_export: AuditExport
    alerts: AlertEngine
    silences: SilenceBook  # in Alertmanager when configured, else opsgate's own
    alert_scheduler: AlertScheduler
    outbox: Outbox
    recent_changes: RecentChanges
    alert_messages: AlertMessages  # what each outbox row becomes as a message
    monitor: Monitor
    retention: Retention
    webhooks: WebhookQueue  # outgoing events, written with the audit rows they carry
    webhook_sender: WebhookSender  # its own task: start_background() / aclose()
    long_watches: LongWatches  # watches of hours to days, read by their own task too
    login_links: LoginLinks  # the dashboard's one-time sign-in links
    four_eyes: FourEyes  # flag changes above a threshold wait for a second person
    runtime: RuntimeStatus = field(default_factory=RuntimeStatus)
    leadership: Leadership | None = None  # set by the runner once this process leads
    clock: Callable[[], datetime] = utc_now  # tests drive time-based rules with their own
    started_at: datetime = field(default_factory=utc_now)
    version: str = VERSION

    @classmethod
    def create(
        cls,
        ops: OpsConfig,
        ops_path: Path,
        storage: Storage,
        clock: Callable[[], datetime] = utc_now,
    ) -> Services:
        """Wire everything; `await open()` then loads what lives in the database."""
        services: Services  # the functions below read it once it exists

        def current_webhooks() -> dict[str, Webhook]:
            return services.ops.webhooks

        # Retries wait real seconds, whatever clock the domain runs on.
        webhooks = WebhookQueue(storage, current_webhooks, utc_now)
        audit = AuditLog(storage, clock, tap=webhooks)
        control_dir = Path(tempfile.mkdtemp(prefix="og-"))
        flags = FlagStore(storage, audit)
        deployments = Deployments(storage, audit, clock)
        http = httpx.AsyncClient(follow_redirects=False, verify=client_context())

        def current_ops() -> OpsConfig:
            return services.ops

        def current_hosts() -> Hosts:
            return services.hosts

        def controller() -> ServiceController:
            return services.controller()

        gate = FlagGate(current_ops, controller, http)
        approvals = Approvals(storage, audit, deployments, current_ops, clock)
        flag_source = LiveFlagSource(flags, current_ops)
        criteria = PlanCriteria(current_ops, http, flag_source.tally)
        plans = PlanService(storage, audit, flags, gate, clock, criteria)
        env_locks = EnvironmentLocks(storage, audit)
        releases = ReleaseQueries(current_ops, current_hosts)
        pipeline = DeployPipeline(
            current_ops, current_hosts, deployments, controller, http, clock=clock
        )
        front_door = FrontDoor(
            current_ops,
            deployments,
            pipeline,
            approvals,
            releases,
            controller,
            env_locks,
            plans,
            audit,
            clock,
        )
        long_watches = LongWatches(
            storage, deployments, audit, lambda name: _deploy_of(services.ops, name)
        )
        pipeline.long_watches = long_watches
        long_watches.watcher = pipeline.watcher

        async def roll_back(watch: LongWatch, why: str) -> int:
            """A breached long watch: the release is bad; back through the front door."""
            await releases.mark_bad(watch.service, watch.version, why, watch.environment)
            origin = Origin("watch")  # the card goes to the deploys chat
            requested = await front_door.rollback(
                watch.service, watch.previous_version, "opsgate", origin, watch.environment
            )
            return requested.deployment.id

        long_watches.roll_back = roll_back
        alert_engine = AlertEngine(storage, audit, current_ops, clock)
        sampler = MetricsSampler()
        recent_changes = RecentChanges(deployments, flags, current_ops, clock)
        services = cls(
            ops=ops,
            ops_path=ops_path,
            storage=storage,
            audit=audit,
            confirmations=Confirmations(storage, audit),
            hosts=hosts_from_config(ops.hosts, control_dir=str(control_dir)),
            http=http,
            sampler=sampler,
            control_dir=control_dir,
            flags=flags,
            plans=plans,
            flag_source=flag_source,
            flagd=FlagdExporter(flags, current_ops),
            deployments=deployments,
            env_locks=env_locks,
            releases=releases,
            pipeline=pipeline,
            approvals=approvals,
            front_door=front_door,
            audit_export=AuditExport(storage, deployments, approvals, current_ops),
            alerts=alert_engine,
            silences=SilenceBook(alert_engine, storage, audit, current_ops, http, clock),
            alert_scheduler=AlertScheduler(storage, current_ops, clock),
            outbox=Outbox(storage, current_ops, clock),
            recent_changes=recent_changes,
            alert_messages=AlertMessages(alert_engine, recent_changes, current_ops),
            monitor=Monitor(alert_engine, current_ops, controller, sampler, clock),
            retention=Retention(storage, storage.sqlite_file, current_ops, clock),
            webhooks=webhooks,
            webhook_sender=WebhookSender(webhooks, current_webhooks, audit),
            long_watches=long_watches,
            login_links=LoginLinks(storage, audit, clock),
            four_eyes=FourEyes(storage, audit, flags, plans, current_ops, clock),
            clock=clock,
        )
        return services

    async def open(self) -> None:
        await self.flags.load()
        await self.adopt_bucketing(self.ops)
        await self.sync_declared_flags()

    async def adopt_bucketing(self, ops: OpsConfig) -> None:
        """The ops file's [flags] bucketing; BucketingChangeRefused when it would re-bucket
        the users of a partial rollout (the ops file then is not taken)."""
        await self.flags.adopt_bucketing(ops.flag_bucketing, ops.flag_bucketing_force, "opsfile")

    def start_background(self) -> None:
        """Tasks of the services' own (on the running loop): the webhook sender, the long
        watches (resumed from their rows)."""
        self.webhook_sender.start()
        self.long_watches.start()

    async def sync_declared_flags(self) -> None:
        """Create flags the ops file declares and the database does not know yet (off, 0%)."""
        for key, declared in self.ops.flags.items():
            if await self.flags.get(key) is not None:
                continue
            if declared.variants is not None and declared.default and declared.split:
                await self.flags.create_variants(
                    key,
                    declared.description,
                    declared.variants,
                    declared.default,
                    list(declared.split.items()),
                    "opsfile",
                )
            else:
                await self.flags.create(key, declared.description, "opsfile")
            await self.flags.set_targeting(key, first_targeting(declared), "opsfile")

    async def placements(self, name: str | None = None) -> list[Placement]:
        """Each service per environment and host, with the release each host runs."""
        return await placements(self.ops, self.controller(), self.releases, name)

    def controller(self) -> ServiceController:
        """A controller over the current ops file (cheap: it holds no state of its own)."""
        return ServiceController(self.ops, self.hosts, self.http, self.sampler)

    async def replace_ops(self, ops: OpsConfig) -> None:
        """Swap in a new ops file; hosts are rebuilt so their changes apply at once."""
        await self.adopt_bucketing(ops)  # first: a refused change keeps the old file whole
        old_hosts = self.hosts
        self.hosts = hosts_from_config(ops.hosts, control_dir=str(self.control_dir))
        self.ops = ops
        await old_hosts.aclose()
        await self.sync_declared_flags()

    def uptime_seconds(self) -> float:
        return (utc_now() - self.started_at).total_seconds()

    async def aclose(self) -> None:
        await self.webhook_sender.stop()  # undelivered rows stay queued for the next run
        await self.long_watches.stop()  # their rows stay `watching`: the next run resumes them
        await self.hosts.aclose()
        await self.http.aclose()
        await self.storage.close()
        shutil.rmtree(self.control_dir, ignore_errors=True)


def first_targeting(declared: FlagDecl) -> Targeting:
    """The targeting an ops file declares for a flag it creates."""
    return Targeting(
        user_ids=frozenset(declared.allow) - frozenset(declared.exclude_users),
        segments=tuple(dict.fromkeys(declared.segments)),
        chat_types=frozenset(declared.chat_types),
        excluded_chats=frozenset(str(chat) for chat in declared.exclude_chats),
        excluded_users=frozenset(declared.exclude_users),
    )
