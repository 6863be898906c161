"""/service NAME shows the limits a deploy is watched by, and where each came from."""

from __future__ import annotations

from pathlib import Path

from bot.dev.sandbox import SandboxClient
from tests.e2e.conftest import BOB, DEPLOYS, OPS_TEXT, StartOpsgate

PEOPLE_AND_CHATS = OPS_TEXT.split("[environments.production]")[0]

OPS = (
    PEOPLE_AND_CHATS
    + """
[environments.production]
[hosts.elsewhere]
prefix = ["false"]
[services.seeded]
environment = "production"
unit = "seeded.service"
health = { url = "http://127.0.0.1:9/health" }
[services.seeded.deploy]
root = "/srv/seeded"
artifact = "/srv/builds/seeded-{version}"
watch_s = 86400
[services.seeded.deploy.error_rate]
url = "http://127.0.0.1:9/metrics"
errors = "http_requests_total"
total = "http_requests_total"
[services.tuned]
environment = "production"
host = "elsewhere"
unit = "tuned.service"
health = { url = "http://127.0.0.1:9/health", latency_limit_s = 2 }
[services.tuned.deploy]
root = "/srv/tuned"
artifact = "/srv/builds/tuned-{version}"
max_memory_percent = 75
[services.tuned.deploy.error_rate]
url = "http://127.0.0.1:9/metrics"
errors = "http_requests_total"
total = "http_requests_total"
max_ratio = 0.02
[services.remote]
environment = "production"
host = "elsewhere"
unit = "remote.service"
health = { tcp = "127.0.0.1:9" }
[services.remote.deploy]
root = "/srv/remote"
artifact = "/srv/builds/remote-{version}"
"""
)


async def test_seeds_defaults_are_shown_with_their_source(
    start_opsgate: StartOpsgate, ops_file: Path, client: SandboxClient
) -> None:
    ops_file.write_text(OPS)
    await start_opsgate()
    seeded = (await client.reply_after(BOB, DEPLOYS, "/service seeded", timeout=30)).text
    assert "Response time: at most 5 s (default: the seeds' 5 s response time)" in seeded
    assert "Memory while watched: at most 90% (default: the seeds' 90% memory" in seeded
    assert "Errors while watched: at most 5% (default: the seeds' 5% error rate)" in seeded
    assert "Watch after a deploy: 1d 0h" in seeded
    tuned = (await client.reply_after(BOB, DEPLOYS, "/service tuned", timeout=30)).text
    assert "Response time: at most 2 s (ops file)" in tuned
    assert "Memory while watched: at most 75% (ops file)" in tuned
    assert "Errors while watched: at most 2% (ops file)" in tuned
    # A tcp probe has no response time to limit; psutil cannot see a process behind a prefix.
    remote = (await client.reply_after(BOB, DEPLOYS, "/service remote", timeout=30)).text
    assert "Response time" not in remote and "Memory while watched" not in remote
    assert "Errors while watched" not in remote and "Watch after a deploy: 1m 0s" in remote
