"""A rolling deploy behind a real nginx, under a steady load: with drain no request fails.

A private nginx on this machine (bot/dev/harness/nginx.py) proxies 127.0.0.1:PORT to the four
production hosts of the test fleet (tests/e2e/test_fleet.py); its upstream is a file that
nginx's config includes. A RequestLoad sends GET / through nginx, each on a new connection,
while the bot rolls v2 over h1-h4 one host at a time. With drain, opsgate marks each host
`down` in that file and reloads nginx before restarting it, and puts it back once healthy:
not one request may fail. The same rollout without drain is the control: requests reach a
host while it restarts and fail, so the load and this nginx do see a host that is not drained.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

from bot.dev.demo_web import free_port
from bot.dev.harness.fleet import Fleet, install_app_unit, remove_app_unit
from bot.dev.harness.gitrepo import make_app_repo
from bot.dev.harness.nginx import (
    UPSTREAM_NAME,
    NginxFiles,
    RequestLoad,
    RequestResult,
    require_nginx,
    running_nginx,
    write_nginx_config,
)
from bot.dev.sandbox import SandboxClient
from tests.e2e.conftest import CAROL, DEPLOYS, StartOpsgate
from tests.e2e.test_fleet import PRODUCTION, UNIT, FleetSetup, run_and_wait

SETTLE_S = 0.5
LOAD_THREADS = 2
LOAD_INTERVAL_S = 0.01  # per thread: a steady ~150 requests a second, light beside the bot
AFTER_S = 0.5  # the load goes on after the rollout's last card: what answers once it is over
MAX_GAP_S = 1.0  # the longest stretch of the rollout allowed without a successful answer
POOL_POLL_S = 0.01  # a host stays down for SETTLE_S and its restart: far longer than this
RELOADED = "signal 1 (SIGHUP) received"  # nginx's error.log line for each `-s reload`
# nginx's error.log line for a request it could not pass to a host (refused, reset, ...).
UPSTREAM_ERROR = re.compile(r'\[error\].* upstream: "http://([0-9.]+):[0-9]+/')


@dataclass(frozen=True)
class Observed:
    """What the load and the upstream file showed, from /deploy sent to the last card seen."""

    started: float  # on the load's clock
    ended: float
    during: list[RequestResult]
    after: list[RequestResult]  # sent after the last card
    pools: list[str]  # each upstream.conf text seen during the rollout, in order
    nginx_log: str  # what nginx wrote to error.log from the rollout's start on
    card: str

    @property
    def reloads(self) -> int:
        return self.nginx_log.count(RELOADED)

    @property
    def hosts_failed(self) -> set[str]:
        """The addresses of the hosts nginx could not pass a request to."""
        return set(UPSTREAM_ERROR.findall(self.nginx_log))

    @property
    def failures(self) -> list[str]:
        return [f"{r.at:.2f}s {r.describe()[:60]}" for r in self.during + self.after if not r.ok]

    @property
    def served(self) -> int:
        return sum(r.ok for r in self.during)

    def longest_gap(self) -> float:
        """The longest time of the rollout without a successful answer."""
        times = [self.started, *(r.at for r in self.during if r.ok), self.ended]
        return max(b - a for a, b in pairwise(times))

    def summary(self) -> str:
        return (
            f"{len(self.during)} requests in {self.ended - self.started:.1f} s of rollout,"
            f" {self.served} served, {len(self.failures)} failed,"
            f" longest gap {self.longest_gap():.2f} s, {self.reloads} reloads;"
            f" nginx: {len(UPSTREAM_ERROR.findall(self.nginx_log))} errors from a host,"
            f" {self.nginx_log.count('no live upstreams')} with no host left"
        )


def versions(results: list[RequestResult]) -> set[str]:
    return {json.loads(r.body)["version"] for r in results if r.ok and r.body is not None}


def upstream_text(setup: FleetSetup, down: str | None = None) -> str:
    """The production pool as opsgate's default template writes it, `down` marked so."""
    port = setup.app.port
    servers = "".join(
        f"    server {setup.fleet.host(h).address}:{port}{' down' if h == down else ''};\n"
        for h in PRODUCTION
    )
    return f"upstream {UPSTREAM_NAME} {{\n{servers}}}\n"


@pytest.fixture
async def setup(fleet: Fleet, ops_file: Path, tmp_path: Path) -> AsyncIterator[FleetSetup]:
    require_nginx()  # skip before anything is installed on the hosts
    if len(fleet.hosts) < 5:
        pytest.fail("the fleet tests need five hosts (staging h5, production h1-h4)")
    repo = make_app_repo(fleet.shared_dir / f"repo-{tmp_path.name}")
    root = f"/srv/{tmp_path.name}"
    app = await install_app_unit(fleet, UNIT, root=root, port=fleet.free_port())
    try:
        yield FleetSetup(fleet, app, repo, ops_file)
    finally:
        await remove_app_unit(fleet, app)


@pytest.fixture
def proxy(setup: FleetSetup, tmp_path: Path) -> Iterator[NginxFiles]:
    """nginx on 127.0.0.1 in front of h1-h4, every host in the pool."""
    # nginx's default `proxy_next_upstream error timeout` sends a request that cannot reach a
    # restarting host on to the next one, so the client would never see that host go: off,
    # such a request fails, and only the drain (no request sent to the host) avoids it.
    files = write_nginx_config(
        tmp_path / "nginx",
        listen_port=free_port(),
        upstream_port=setup.app.port,
        location_directives="proxy_next_upstream off;",
    )
    files.upstream.write_text(upstream_text(setup))
    with running_nginx(files):
        yield files


def drain_toml(files: NginxFiles, port: int) -> str:
    return f"""
[services.app.rollout.drain]
upstream_file = "{files.upstream}"
port = {port}
reload = {json.dumps(files.reload_argv())}
settle_s = {SETTLE_S}
"""


async def watch_pool(files: NginxFiles, seen: list[str]) -> None:
    """Append each new text of the upstream file (opsgate replaces it whole, by rename)."""
    while True:
        text = files.upstream.read_text()
        if not seen or seen[-1] != text:
            seen.append(text)
        await asyncio.sleep(POOL_POLL_S)


def nginx_log(files: NginxFiles) -> str:
    return files.error_log.read_text(errors="replace")


async def roll_v2_under_load(
    setup: FleetSetup,
    start_opsgate: StartOpsgate,
    client: SandboxClient,
    files: NginxFiles,
    rollout: str,
) -> Observed:
    """v1 on h1-h4 at once, then v2 with `rollout` while the load runs through nginx."""
    setup.write_ops(rollout="batch = 4\nparallel = 4")
    await start_opsgate()
    first = await run_and_wait(client, "/deploy app v1 to production")
    assert "✅ app runs v1." in first.text, first.text
    setup.write_ops(rollout=rollout)
    reloaded = await client.reply_after(CAROL, DEPLOYS, "/reload")
    assert "reloaded" in reloaded.text.lower(), reloaded.text

    load = RequestLoad(files.listen_port, threads=LOAD_THREADS, interval_s=LOAD_INTERVAL_S)
    pools: list[str] = []
    watcher = asyncio.create_task(watch_pool(files, pools))
    load.start()
    try:
        await asyncio.sleep(0.3)
        assert load.total > 0 and load.failures == [], (load.failures[:10], files.logs())
        started, logged = load.now(), len(nginx_log(files))
        card = await run_and_wait(client, "/deploy app v2 to production")
        ended = load.now()
        await asyncio.sleep(AFTER_S)
    finally:
        watcher.cancel()
        await asyncio.to_thread(load.stop)  # joins the threads: off the event loop
    results = load.results
    return Observed(
        started=started,
        ended=ended,
        during=[r for r in results if started <= r.at <= ended],
        after=[r for r in results if r.at > ended],
        pools=pools,
        nginx_log=nginx_log(files)[logged:],
        card=card.text,
    )


async def test_a_drained_rolling_deploy_loses_no_request(
    setup: FleetSetup, proxy: NginxFiles, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    seen = await roll_v2_under_load(
        setup, start_opsgate, client, proxy, "batch = 1" + drain_toml(proxy, setup.app.port)
    )
    print(f"\nwith drain: {seen.summary()}")
    assert "✅ app runs v2 (was v1)." in seen.card, seen.card
    for batch, host in enumerate(PRODUCTION, start=1):
        assert f"batch {batch}/4: {host}" in seen.card, seen.card

    assert seen.failures == [], (seen.failures[:10], proxy.logs())
    assert seen.hosts_failed == set(), seen.nginx_log  # nginx never even tried a drained host
    assert seen.served > 100, seen.summary()
    assert seen.longest_gap() < MAX_GAP_S, seen.summary()
    assert versions(seen.during) == {"v1", "v2"}
    assert seen.after and versions(seen.after) == {"v2"}

    # opsgate did drain: each host out of the pool alone, in rollout order, each out and
    # back in with a reload; at the end every host is in again.
    drained = [text for text in seen.pools if " down;" in text]
    assert list(dict.fromkeys(drained)) == [upstream_text(setup, down=h) for h in PRODUCTION]
    assert seen.reloads == 2 * len(PRODUCTION), proxy.logs()
    assert proxy.upstream.read_text() == upstream_text(setup)

    # Checked on each host: every one runs v2 and answers with it.
    assert await setup.current(PRODUCTION) == dict.fromkeys(PRODUCTION, "v2")
    assert await setup.serving(PRODUCTION) == dict.fromkeys(PRODUCTION, "v2")


async def test_without_drain_the_same_rollout_fails_requests(
    setup: FleetSetup, proxy: NginxFiles, start_opsgate: StartOpsgate, client: SandboxClient
) -> None:
    """The control: the first test's load and nginx do see a host that is not drained."""
    seen = await roll_v2_under_load(setup, start_opsgate, client, proxy, "batch = 1")
    print(f"\nwithout drain: {seen.summary()}")
    assert "✅ app runs v2 (was v1)." in seen.card, seen.card
    assert seen.reloads == 0 and seen.pools == [upstream_text(setup)]  # nobody drained
    assert seen.failures, f"no request failed without drain: {seen.summary()}"
    # nginx's 502 for a request it could not pass to its host, or an answer cut short: the
    # stopping process sent the headers and died before the body. Not the load's own doing.
    others = [f for f in seen.failures if "HTTP 502" not in f and "IncompleteRead" not in f]
    assert others == [], others[:10]
    # Each host's restart cost requests: refused, or reset by the stopping process. (After
    # that first error nginx skips the host for fail_timeout, 10 s by default; once every
    # host was skipped it answers 502 "no live upstreams" to all: most of the failures.)
    addresses = {setup.fleet.host(h).address for h in PRODUCTION}
    assert seen.hosts_failed == addresses, seen.nginx_log[-3000:]
    assert await setup.current(PRODUCTION) == dict.fromkeys(PRODUCTION, "v2")
