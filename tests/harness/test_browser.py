"""The headless-Chromium harness against a page that changes by itself: waits see the changes
without blocking the event loop, a wait that fails says what the page showed, and the
Telegram Mini App initData it signs is what Telegram's own check accepts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote, unquote

import pytest

from bot.dev.harness.browser import Browser, BrowserTimeout, running_browser
from bot.dev.harness.telegram_webapp import fragment, init_data

# A page that shows a list item after 300 ms, changes its text after 600 ms, and logs an error.
PAGE = """<ul id=steps></ul><p id=msg></p>
<button id=go onclick="msg.textContent='clicked'">go</button>
<script>
setTimeout(() => { steps.innerHTML = '<li class=step data-status=running>build</li>'; }, 300);
setTimeout(() => { steps.firstChild.dataset.status = 'ok'; msg.textContent = 'done'; }, 600);
console.error('planted error');
</script>"""
URL = "data:text/html," + quote(PAGE)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with running_browser() as started:
        yield started


async def test_waits_follow_the_page_and_leave_the_loop_free(browser: Browser) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        await browser.open(URL)
        assert await browser.wait_css("li.step[data-status='running']") == "build"
        await browser.wait_css("li.step[data-status='ok']")
        assert await browser.wait_text("#msg", "done") == "done"
        await browser.click("#go")
        await browser.wait_text("#msg", "clicked")
        await browser.wait_gone("li.step[data-status='running']", timeout=1)
        assert await browser.attributes("li.step", "data-status") == ["ok"]
    finally:
        ticker.cancel()
    assert ticks > 10  # the loop ran on while the browser was being waited for


async def test_a_failed_wait_says_what_the_page_showed(browser: Browser) -> None:
    await browser.reset()
    await browser.open(URL)
    await browser.wait_text("#msg", "done")
    with pytest.raises(BrowserTimeout) as failed:
        await browser.wait_text("li.step", "deploy", timeout=0.5)
    message = str(failed.value)
    assert "'deploy' in 'li.step'" in message
    assert "li.step now:\n  'build'" in message
    assert "page text:" in message and "done" in message
    assert "planted error" in message  # the console


def test_init_data_passes_telegrams_check() -> None:
    token = "123456:test-token"
    raw = init_data(token, 1001, "Alice Q", username="alice", auth_date=1_700_000_000)
    fields = dict(parse_qsl(raw))
    given = fields.pop("hash")
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    secret = hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()
    assert given == hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()
    assert fields["auth_date"] == "1700000000" and '"id":1001' in fields["user"]
    assert "%20" in raw and "+" not in raw  # percent-encoded as Telegram's clients do
    opened = dict(parse_qsl(fragment(raw)[1:]))
    assert opened["tgWebAppData"] == raw and unquote(raw) != raw
