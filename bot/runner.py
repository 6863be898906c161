"""Opsgate's lifecycle, by hand (as PTB's Starlette example does): start, serve, stop.

Used alike by `opsgate run`, the demo and the end-to-end tests, so the tests start the bot
exactly as production does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable
from datetime import datetime

from telegram import Bot, BotCommand, MenuButtonWebApp, Update, WebAppInfo
from telegram.error import TelegramError

from bot.alert_notifier import alert_tick
from bot.app import all_buttons, all_commands, build_application
from bot.deploy_cards import resume_after_restart, retire_card
from bot.http.app import create_http_app
from bot.http.ofrep_fast import ofrep_protocol
from bot.http.relay import FollowerApp, answers_listener, keep_flags_current, relay_worker
from bot.http.server import BackgroundHTTPServer, SwappableApp
from bot.logs import redact_also
from bot.startup import ConfigurationError
from config.opsfile import OpsConfig, load_ops_file
from config.settings import Settings, UpdateMode
from handlers.alerts_chat import monitor_tick
from handlers.approvals_chat import approval_timers
from handlers.buttons import ButtonRoute
from handlers.commands import Command
from handlers.context import OpsApplication
from handlers.deploy_render import render_recovery
from handlers.errors import check_chat_reachable, retention_tick
from handlers.flags_chat import run_plan_tick
from services.container import Services
from services.deploy.host_rows import HoldAt
from services.deploy.model import DeploymentState
from services.deploy.recovery import reconcile
from services.records.audit import utc_now
from services.records.leadership import Leadership
from services.records.postgres import PgListener
from services.records.relay import RelayQueue
from services.records.storage import Storage

log = logging.getLogger(__name__)


class Opsgate:
    """One running opsgate: storage, the PTB Application and the HTTP side."""

    def __init__(
        self,
        settings: Settings,
        ops: OpsConfig | None = None,
        extra_commands: Iterable[Command] = (),
        extra_buttons: Iterable[ButtonRoute] = (),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self._ops = ops
        self._extra_commands = list(extra_commands)
        self._extra_buttons = list(extra_buttons)
        self._clock = clock  # tests drive staged plans through hours with their own
        self._application: OpsApplication | None = None
        self._http: BackgroundHTTPServer | None = None
        self._services: Services | None = None
        self._leadership: Leadership | None = None
        self._watching: asyncio.Task[None] | None = None
        self._relaying: asyncio.Task[None] | None = None  # acting on what followers stored
        self._front: SwappableApp | None = None  # the HTTP app, while following and after
        self._listener: PgListener | None = None
        # Set when this opsgate, leading a shared PostgreSQL, lost its session (and the lead).
        self.lost_lead = asyncio.Event()
        self.lost_reason = ""

    @property
    def application(self) -> OpsApplication:
        if self._application is None:
            raise RuntimeError("opsgate is not started")
        return self._application

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("opsgate is not started")
        return self._services

    @property
    def http_port(self) -> int:
        if self._http is None:
            raise RuntimeError("opsgate is not started")
        return self._http.port

    async def start(self) -> None:
        settings = self.settings
        ops = self._ops or load_ops_file(settings.config)
        redact_also(os.environ.get(hook.secret_env, "") for hook in ops.webhooks.values())
        webhook = settings.mode is UpdateMode.WEBHOOK
        storage = await Storage(settings.db).open()
        self._leadership = leadership = Leadership(storage, f"{socket.gethostname()}:{os.getpid()}")
        if leadership.shared and webhook and not settings.webhook_secret.get_secret_value():
            await storage.close()
            raise ConfigurationError(
                "webhook mode with a shared PostgreSQL needs OPSGATE_WEBHOOK_SECRET: every"
                " opsgate takes Telegram's updates and must know the secret the leader sets"
            )
        services = Services.create(ops, settings.config, storage, self._clock)
        try:
            if leadership.shared:
                await self._follow(leadership, services)
            else:
                await leadership.wait_to_lead()
        except BaseException:  # stopped while following, or the database went away
            if self._http is not None:
                await self._http.stop()
                self._http = self._front = None
            await services.aclose()
            raise
        self._services = services
        services.leadership = leadership
        if settings.hold_at.startswith("host."):
            services.deployments.hosts.hold_at = HoldAt.parse(settings.hold_at)
        elif settings.hold_at.startswith("canary.step."):
            services.deployments.canary.hold_at_step = int(settings.hold_at.rsplit(".", 1)[1])
        elif settings.hold_at:
            services.deployments.hold_at = DeploymentState(settings.hold_at)
        await services.open()
        services.start_background()  # the webhook sender: queued events go out from here on
        commands = all_commands(self._extra_commands)
        buttons = all_buttons(self._extra_buttons)
        self._application = application = build_application(settings, services, commands, buttons)

        await application.initialize()  # getMe: fails here on a wrong token or URL
        await application.bot.set_my_commands(
            [BotCommand(c.name, c.description) for c in commands.all()]
        )
        await _set_menu_button(application.bot, ops)
        await application.start()
        await self._reconcile_deployments()
        assert application.job_queue is not None  # the job-queue extra is a dependency
        application.job_queue.run_repeating(
            run_plan_tick,
            interval=ops.bot.plan_check_s,
            first=ops.bot.plan_check_s,
            name="flag-plans",
        )
        application.job_queue.run_repeating(
            approval_timers,
            interval=ops.approvals.check_s,
            first=ops.approvals.check_s,
            name="approval-timers",
        )
        application.job_queue.run_repeating(
            alert_tick, interval=ops.alerts.tick_s, first=ops.alerts.tick_s, name="alerts"
        )
        every = ops.alerts.monitor_interval_s
        application.job_queue.run_repeating(monitor_tick, every, first=every, name="monitor")
        application.job_queue.run_repeating(check_chat_reachable, 60, first=0.5, name="chat-ping")
        keep = ops.retention.every_h * 3600
        application.job_queue.run_repeating(retention_tick, keep, first=60, name="retention")

        secret = None
        if webhook:
            # Without a configured secret, a fresh random one still keeps strangers out.
            secret = settings.webhook_secret.get_secret_value() or secrets.token_urlsafe(32)
        http_app = create_http_app(
            application,
            services,
            secret,
            settings.webhook_url,
            settings.api_token.get_secret_value(),
            settings.alerts_token.get_secret_value(),
        )
        if self._front is not None:  # it followed: its server goes on, with this app now
            self._front.app = http_app
        else:
            self._http = BackgroundHTTPServer(
                http_app,
                settings.http_host,
                settings.http_port,
                http=ofrep_protocol(services.flag_source, settings.api_token.get_secret_value()),
            )
            await self._http.start()
        if leadership.shared and storage.url is not None:
            # What followers took on their HTTP side, acted on here through this same app.
            worker, self._listener = relay_worker(
                http_app, RelayQueue(storage, leadership.name), storage.url
            )
            self._relaying = asyncio.create_task(worker.run())

        if webhook:
            await application.bot.set_webhook(
                settings.webhook_url, secret_token=secret, allowed_updates=Update.ALL_TYPES
            )
        else:
            assert application.updater is not None
            await application.updater.start_polling(allowed_updates=Update.ALL_TYPES)
        await services.audit.record(
            "opsgate.started",
            actor="opsgate",
            data={"mode": settings.mode.value, "leader": leadership.name},
        )
        self._watching = asyncio.create_task(leadership.watch(self._lose_lead))
        log.info(
            "opsgate %s started as @%s (%s mode, HTTP on %s:%d)",
            services.version,
            application.bot.username,
            settings.mode.value,
            settings.http_host,
            self.http_port,
        )

    async def _follow(self, leadership: Leadership, services: Services) -> None:
        """Until this process leads: serve the HTTP side as a follower (bot/http/relay.py):
        /health, /metrics and OFREP from here, anything else stored for the leader to act on."""
        settings = self.settings
        api_token = settings.api_token.get_secret_value()
        webhook = settings.mode is UpdateMode.WEBHOOK
        app = FollowerApp(
            services,
            leadership,
            RelayQueue(services.storage, leadership.name),
            settings.relay_wait_s,
            api_token,
            settings.webhook_secret.get_secret_value() if webhook else None,
            settings.webhook_url,
        )
        await services.flags.reload_if_changed()
        flags = asyncio.create_task(keep_flags_current(services))
        assert services.storage.url is not None  # only a shared database has followers
        listener = answers_listener(services.storage.url)
        answers = asyncio.create_task(app.listen_for_answers(listener.wait))
        # The server stays when this process comes to lead: the port never closes, and the
        # leader's app takes the place of this one (start()).
        self._front = SwappableApp(app)
        self._http = BackgroundHTTPServer(
            self._front,
            settings.http_host,
            settings.http_port,
            http=ofrep_protocol(services.flag_source, api_token),
        )
        await self._http.start()
        log.info("following (HTTP on %s:%d)", settings.http_host, self._http.port)
        try:
            await leadership.wait_to_lead()
        finally:
            app.close()  # what waits on a leader is answered 202: this one acts on it soon
            for task in (flags, answers):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await listener.close()

    def _lose_lead(self, reason: str) -> None:
        self.lost_reason = reason
        self.lost_lead.set()

    async def _reconcile_deployments(self) -> None:
        """Deployments a previous run left in flight: end or report them, in the deploys chat."""
        services, application = self.services, self.application
        result = await reconcile(services.deployments)
        text = render_recovery(result.ended, result.needs_attention)
        if text is None:
            return
        log.warning(
            "%d deployment(s) were in flight at start-up",
            len(result.ended) + len(result.needs_attention),
        )
        for deployment in [*result.ended, *result.needs_attention]:
            await retire_card(application.bot, deployment)
        if services.ops.chats.deploys is not None:
            await application.bot.send_message(services.ops.chats.deploys, text)
        for deployment in result.needs_attention:
            application.create_task(resume_after_restart(application.bot, services, deployment))

    async def stop(self) -> None:
        """Stop taking updates, let running handlers finish, then close everything."""
        application = self._application
        if application is None and self._services is None:
            return  # nothing started (the ops file failed to load): nothing to say either
        if self._watching is not None:
            self._watching.cancel()
            self._watching = None
        if self._relaying is not None:
            self._relaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relaying
            self._relaying = None
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        updater = application.updater if application is not None else None
        if updater is not None and updater.running:
            await updater.stop()
        if self._http is not None:
            await self._http.stop()
            self._http = None
        self._front = None
        if application is not None:
            if application.running:
                await application.stop()
            await application.shutdown()
            self._application = None
        if self._services is not None:
            if not self.lost_lead.is_set():  # without its session there is nothing to write to
                await self._services.audit.record("opsgate.stopped", actor="opsgate")
            await self._services.aclose()
            self._services = None
        log.info("opsgate stopped")


async def _set_menu_button(bot: Bot, ops: OpsConfig) -> None:
    """Private chats' menu button opens the dashboard as a Mini App (https pages only)."""
    dashboard = ops.dashboard
    if dashboard is None or not dashboard.opens_in_telegram:
        return
    button = MenuButtonWebApp("Dashboard", WebAppInfo(dashboard.page))
    try:
        await bot.set_chat_menu_button(menu_button=button)
    except TelegramError as exc:  # a courtesy: /dashboard and the buttons still open it
        log.warning("the menu button was not set: %s", exc)
