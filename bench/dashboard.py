"""The dashboard's (/app/) first load and the server's cost of one live update, measured against
`opsgate run` (a real process) with the demo's service under a private supervisord, the Bot API
sandbox and Debian's headless Chromium. Run by hand:

    .venv/bin/python bench/dashboard.py [--runs 7] [--requests 300] [--screenshots DIR]

First load, over `--runs` cold loads (cookies and cache cleared, the cache disabled) of the page
as Telegram opens it (initData in the fragment): the bytes transferred (transferSize of the
document and of every request made before the first render, from the Performance API; the
uncompressed size of the page and its assets as fetched beside it) and the time to the first
render (`performance.mark("opsgate-rendered")`, from the navigation's start). Goal (issue 21):
under 150 KB and under 300 ms.

One live update: `--requests` rounds of GET /app/api/state with a session cookie (200), the
same with If-None-Match (304) and GET /health as the baseline, interleaved over one keep-alive
connection each so that machine noise hits all three alike; median and p95, and their ratios.

`--screenshots DIR` saves dashboard-phone.png (390x844) and dashboard-desktop.png (1280x800).
The data: web deployed v2 (signed off through the dashboard's own API), v3 rolled back by
itself, v1 waiting for sign-off, a critical alert firing, a flag at 25%.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bot.dev.demo import (
    seed_sandbox,
    start_demo_service,
    write_artifacts,
    write_demo_ops,
)
from bot.dev.demo_web import free_port
from bot.dev.harness.browser import DESKTOP, PHONE, Browser, running_browser, unavailable_reason
from bot.dev.harness.telegram_webapp import fragment, init_data
from bot.dev.sandbox import SandboxClient, SandboxThread
from bot.dev.supervisord_local import private_supervisord
from config.opsfile import load_ops_file

REPO = Path(__file__).resolve().parents[1]
TOKEN = "7300000002:BENCH-dashboard-token-shaped-like-botfathers"
ALICE, BOB, CAROL = 1001, 1002, 1003  # the demo ops file's people
NAMES = {ALICE: "alice", BOB: "bob", CAROL: "carol"}
DASHBOARD = '[dashboard]\nurl = "https://ops.example.test/app/"\n\n'
ALERTS_TOKEN = "bench-dashboard-alerts"
BUDGET_BYTES = 150 * 1024
BUDGET_RENDER_MS = 300.0
FINISHED = {"succeeded", "failed", "rolled_back", "rollback_failed", "cancelled"}

# Everything the page fetched up to its first render, from the Performance API.
FIRST_LOAD = """
const mark = performance.getEntriesByName("opsgate-rendered")[0];
const nav = performance.getEntriesByType("navigation")[0];
const before = performance.getEntriesByType("resource").filter(r => r.startTime <= mark.startTime);
return {
  rendered_ms: mark.startTime,
  document: {name: nav.name.split("#")[0], transfer: nav.transferSize, body: nav.decodedBodySize,
             ms: nav.responseEnd, dom_ready_ms: nav.domContentLoadedEventEnd},
  resources: before.map(r => ({name: r.name, kind: r.initiatorType, ms: r.duration,
                               transfer: r.transferSize, body: r.decodedBodySize})),
};
"""


class Session:
    """A person signed in to the dashboard over HTTP (the cookie and the CSRF token)."""

    def __init__(self, base: str, user: int) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)
        raw = init_data(TOKEN, user, NAMES[user].capitalize(), NAMES[user])
        answer = self.http.post("/app/auth/telegram", json={"init_data": raw})
        answer.raise_for_status()
        self.csrf = str(answer.json()["csrf"])

    def state(self) -> dict[str, Any]:
        answer = self.http.get("/app/api/state")
        answer.raise_for_status()
        return dict(answer.json())

    def post(self, path: str, body: dict[str, Any] | None = None) -> None:
        answer = self.http.post(path, json=body or {}, headers={"X-CSRF-Token": self.csrf})
        if answer.status_code != 200:
            raise RuntimeError(f"POST {path}: {answer.status_code} {answer.text}")

    def wait(self, what: str, found: Callable[[dict[str, Any]], Any], timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := found(self.state())):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the dashboard never showed {what}")
            time.sleep(0.2)
        return value


def sign_off(bob: Session, alice: Session, deployment_id: int) -> None:
    """qa (bob: tick, approve) and sre (alice) sign deployment `deployment_id` off."""
    request = bob.wait(
        f"the sign-off of #{deployment_id}",
        lambda s: next((r for r in s["signoffs"] if r["deployment_id"] == deployment_id), None),
    )
    roles = {role["role"]: role for role in request["roles"]}
    for item in roles["qa"]["items"]:
        bob.post(f"/app/api/signoffs/items/{item['id']}", {"ticked": True})
    bob.post(f"/app/api/signoffs/roles/{roles['qa']['id']}/approve")
    alice.post(f"/app/api/signoffs/roles/{roles['sre']['id']}/approve")


def finished(session: Session, deployment_id: int) -> str:
    return str(
        session.wait(
            f"#{deployment_id} finished",
            lambda s: next(
                (
                    d["state"]
                    for d in s["history"]
                    if d["id"] == deployment_id and d["state"] in FINISHED
                ),
                None,
            ),
        )
    )


async def make_data(client: SandboxClient, base: str, deploys: int) -> None:
    """web v2 deployed, v3 rolled back, v1 waiting, an alert firing, a flag at 25%."""
    bob = await asyncio.to_thread(Session, base, BOB)
    alice = await asyncio.to_thread(Session, base, ALICE)
    for deployment_id, version in ((1, "v2"), (2, "v3")):
        await client.reply_after(CAROL, deploys, f"/deploy web {version}", timeout=30)
        await asyncio.to_thread(sign_off, bob, alice, deployment_id)
        state = await asyncio.to_thread(finished, bob, deployment_id)
        print(f"  #{deployment_id} web {version}: {state}")
    await client.reply_after(CAROL, deploys, "/deploy web v1", timeout=30)
    await client.reply_after(CAROL, deploys, "/flag checkout_v2 25", timeout=30)
    alert = {
        "labels": {"alertname": "ApiErrors", "severity": "critical", "service": "web"},
        "annotations": {"summary": "error rate above 5%"},
    }
    async with httpx.AsyncClient(base_url=base) as http:
        posted = await http.post(
            "/webhooks/generic",
            json={"alerts": [alert]},
            headers={"Authorization": f"Bearer {ALERTS_TOKEN}"},
        )
        posted.raise_for_status()
    await asyncio.to_thread(bob.wait, "the alert", lambda s: s["alerts"])


def page_url(base: str, user: int) -> str:
    return f"{base}/app/" + fragment(init_data(TOKEN, user, NAMES[user].capitalize(), NAMES[user]))


async def first_loads(browser: Browser, base: str, runs: int) -> list[dict[str, Any]]:
    loads = []
    for _ in range(runs):
        await browser.reset()
        await browser.disable_cache()
        await browser.open(page_url(base, ALICE))
        await browser.wait_js("document.body.dataset.rendered === '1'", "the first render")
        loads.append(await browser.run(FIRST_LOAD))
    return loads


def fetched_sizes(base: str) -> dict[str, int]:
    """The page and every asset it names, fetched as bytes (uncompressed, no headers)."""
    with httpx.Client(base_url=base) as http:
        page = http.get("/app/")
        sizes = {"/app/": len(page.content)}
        for asset in re.findall(r'(?:src|href)="(/app/static/[^"]+)"', page.text):
            sizes[asset] = len(http.get(asset).content)
    return sizes


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def live_update_cost(base: str, requests: int) -> dict[str, list[float]]:
    """Seconds per request: state (200), state revalidated (304), /health; interleaved."""
    session = Session(base, ALICE)
    etag = session.http.get("/app/api/state").headers["etag"]
    health = httpx.Client(base_url=base, timeout=30)
    timings: dict[str, list[float]] = {"state 200": [], "state 304": [], "health": []}
    calls: dict[str, tuple[Callable[[], httpx.Response], int]] = {
        "state 200": (lambda: session.http.get("/app/api/state"), 200),
        "state 304": (
            lambda: session.http.get("/app/api/state", headers={"If-None-Match": etag}),
            304,
        ),
        "health": (lambda: health.get("/health"), 200),
    }
    for _ in range(requests):
        for name, (call, status) in calls.items():
            started = time.perf_counter()
            answer = call()
            timings[name].append(time.perf_counter() - started)
            if answer.status_code != status:
                raise RuntimeError(f"{name}: {answer.status_code} (the state changed?)")
    state_bytes = len(session.http.get("/app/api/state").content)
    print(f"  /app/api/state body: {state_bytes} bytes")
    return timings


def report_first_load(loads: list[dict[str, Any]], sizes: dict[str, int]) -> None:
    rendered = [load["rendered_ms"] for load in loads]
    totals = []
    for load in loads:
        totals.append(load["document"]["transfer"] + sum(r["transfer"] for r in load["resources"]))
    last = loads[-1]
    print("first load (cold, cache disabled), one run's requests up to the first render:")
    print(f"  {'document':<34} {last['document']['transfer']:>8} B transferred")
    for r in last["resources"]:
        name = r["name"].split("127.0.0.1", 1)[-1].split(":", 1)[-1].lstrip("0123456789")
        print(f"  {name:<34} {r['transfer']:>8} B transferred ({r['body']} B body, {r['kind']})")
    total = statistics.median(totals)
    verdict = "within" if total < BUDGET_BYTES else "OVER"
    print(
        f"  total transferred, median of {len(totals)}: {total / 1024:.1f} KiB"
        f" ({verdict} the {BUDGET_BYTES // 1024} KiB goal)"
    )
    print("  fetched beside it (uncompressed bodies): " + ", ".join(
        f"{name} {size} B" for name, size in sizes.items()
    ) + f"; sum {sum(sizes.values()) / 1024:.1f} KiB")  # fmt: skip
    median = statistics.median(rendered)
    verdict = "within" if median < BUDGET_RENDER_MS else "OVER"
    print(
        f"  time to first render: median {median:.0f} ms, min {min(rendered):.0f},"
        f" max {max(rendered):.0f} ({verdict} the {BUDGET_RENDER_MS:.0f} ms goal);"
        f" runs: {', '.join(f'{r:.0f}' for r in rendered)}"
    )
    # Where the time goes (medians): the page is drawn after two requests made one after the
    # other, the sign-in and the first state.
    parts = {
        "document received": [load["document"]["ms"] for load in loads],
        "DOMContentLoaded": [load["document"]["dom_ready_ms"] for load in loads],
    }
    for path in ("/app/auth/telegram", "/app/api/state"):
        parts[f"{path} took"] = [
            r["ms"] for load in loads for r in load["resources"] if r["name"].endswith(path)
        ]
    print("  " + ", ".join(f"{k} {statistics.median(v):.0f} ms" for k, v in parts.items() if v))


def report_live_update(timings: dict[str, list[float]]) -> None:
    n = len(timings["health"])
    print(f"one live update, {n} rounds over keep-alive connections (ms):")
    base_median = statistics.median(timings["health"])
    base_p95 = percentile(timings["health"], 95)
    for name, values in timings.items():
        median, p95 = statistics.median(values), percentile(values, 95)
        print(
            f"  {name:<10} median {median * 1000:6.2f}  p95 {p95 * 1000:6.2f}"
            f"   x{median / base_median:.2f} / x{p95 / base_p95:.2f} of /health"
        )


async def screenshots(browser: Browser, base: str, directory: Path) -> None:
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    for size, name in ((PHONE, "dashboard-phone.png"), (DESKTOP, "dashboard-desktop.png")):
        await browser.reset()
        await browser.set_size(size)
        await browser.open(page_url(base, ALICE))
        await browser.wait_js("document.body.dataset.rendered === '1'", "the first render")
        await browser.wait_css("#alerts section.alert-group")
        await browser.screenshot(directory / name)
        print(f"  saved {directory / name} ({size.width}x{size.height})")


async def start_opsgate(ops_path: Path, workdir: Path, sandbox: SandboxThread) -> tuple[Any, str]:
    port = free_port()
    env = dict(os.environ)
    env.update(
        OPSGATE_BOT_TOKEN=TOKEN,
        OPSGATE_BOT_API_URL=sandbox.base_url,
        OPSGATE_CONFIG=str(ops_path),
        OPSGATE_DB=str(workdir / "bench.db"),
        OPSGATE_HTTP_ADDR=f"127.0.0.1:{port}",
        OPSGATE_ALERTS_TOKEN=ALERTS_TOKEN,
        OPSGATE_LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", env=env, cwd=workdir,
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as http:
        for _ in range(300):
            try:
                if (await http.get("/health")).status_code == 200:
                    return process, base
            except httpx.HTTPError:
                pass
            if process.returncode is not None:
                break
            await asyncio.sleep(0.1)
    raise RuntimeError("opsgate did not start (see its output above)")


async def main(runs: int, requests: int, shots: Path | None) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="og-bench-dash-") as tmp,
        private_supervisord("og-bench-dash-") as sv,
        SandboxThread(TOKEN) as sandbox,
    ):
        workdir = Path(tmp)
        write_artifacts(workdir / "artifacts")
        port = await start_demo_service(sv, workdir / "web", workdir / "artifacts")
        ops_path = write_demo_ops(workdir, sv, port)
        ops_path.write_text(DASHBOARD + ops_path.read_text())
        ops = load_ops_file(ops_path)
        async with SandboxClient(sandbox.control_url) as client:
            await seed_sandbox(client, ops)
            process, base = await start_opsgate(ops_path, workdir, sandbox)
            try:
                assert ops.chats.deploys is not None
                print("data: web v2 signed off and deployed, v3 rolled back, v1 waiting, ...")
                await make_data(client, base, ops.chats.deploys)
                sizes = await asyncio.to_thread(fetched_sizes, base)
                with running_browser(PHONE) as browser:
                    loads = await first_loads(browser, base, runs)
                    if shots is not None:
                        print("screenshots:")
                        await screenshots(browser, base, shots)
                timings = await asyncio.to_thread(live_update_cost, base, requests)
            finally:
                process.terminate()
                await process.wait()
    print(f"cores: {os.cpu_count()}, chromium: headless, window {PHONE.width}x{PHONE.height}")
    report_first_load(loads, sizes)
    report_live_update(timings)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="cold loads (at most 15)")
    parser.add_argument("--requests", type=int, default=300, help="rounds of the three requests")
    parser.add_argument("--screenshots", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    # Sign-ins are limited to 20 a minute per address: the loads, the setup's and the screenshots'.
    if not 1 <= args.runs <= 15:
        parser.error("--runs: 1 to 15 (the dashboard allows 20 sign-ins a minute per address)")
    if (reason := unavailable_reason()) is not None:
        sys.exit(f"no headless Chromium: {reason}")
    asyncio.run(main(args.runs, args.requests, args.screenshots))
