"""/metrics of a running opsgate passes `promtool check metrics` (Prometheus' own linter), and
carries the process' series and the build info besides opsgate's own."""

from __future__ import annotations

import subprocess

import httpx
import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from bot.dev.harness.daemons import require
from bot.dev.harness.prometheus import PROMTOOL, unavailable_reason
from bot.http.metrics import CONTENT_TYPE
from services.container import VERSION
from tests.e2e.conftest import StartOpsgate


async def test_metrics_pass_promtool_and_carry_process_and_build_info(
    start_opsgate: StartOpsgate,
) -> None:
    require(unavailable_reason())
    opsgate = await start_opsgate()
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{opsgate.http_port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    assert CONTENT_TYPE == prometheus_client.CONTENT_TYPE_LATEST

    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=response.content, capture_output=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert checked.stdout.strip() == b"" and checked.stderr.strip() == b""  # no lint remarks

    samples = {s.name: s for f in text_string_to_metric_families(response.text) for s in f.samples}
    assert samples["opsgate_build_info"].labels == {"version": VERSION, "python_optimize": "0"}
    assert samples["opsgate_build_info"].value == 1
    assert samples["process_resident_memory_bytes"].value > 10 * 1024 * 1024
    for name in ("process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds"):
        assert samples[name].value > 0, name
    assert "python_info" in samples
    assert "opsgate_telegram_api_errors_total" in samples  # opsgate's own are still there
