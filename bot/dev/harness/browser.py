"""Headless Chromium for the dashboard's tests and bench: Debian's chromium driven by selenium,
one browser reused for many pages, every blocking call made in a thread.

    require_browser()                        # skip here, fail under CI=true, without chromium
    with running_browser(PHONE) as browser:  # one per session or module (a start costs ~0.8 s)
        await browser.open(url)
        await browser.wait_css("#services tr.service[data-service='web']")
        await browser.click("button.approve[data-role-id='3']")
        await browser.wait_text("#message", "Approved.")

The e2e tests run opsgate on the test's own event loop: a selenium call made on that loop would
freeze the bot the page is waiting for. So every method is async and runs its selenium calls
through `asyncio.to_thread`. A wait polls in that thread (reading the page with one script per
poll, so a re-render between two reads cannot break it) until its condition holds, and fails
after its timeout with what the page showed instead: the matching elements' text, the page's
text, its URL and the browser console.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from bot.dev.harness.daemons import require

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 30.0  # generous: the machine is shared, and a state may need a poll or two to show
POLL_S = 0.1
PAGE_TEXT_CHARS = 2000  # of the page's text in a failure message

T = TypeVar("T")


@dataclass(frozen=True)
class WindowSize:
    """The page's viewport (exactly: screenshots have this size), and a phone's or not."""

    width: int
    height: int
    mobile: bool = False


PHONE = WindowSize(390, 844, mobile=True)
DESKTOP = WindowSize(1280, 800)

# One script per poll: the matches' text, read at one instant.
_TEXTS = "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText);"
_ATTRIBUTES = (
    "return Array.from(document.querySelectorAll(arguments[0]), e => e.getAttribute(arguments[1]));"
)
_PAGE_TEXT = "return document.body ? document.body.innerText : document.documentElement.outerHTML;"


class BrowserTimeout(AssertionError):
    """A wait's condition did not hold in time; the message says what the page showed."""


def unavailable_reason() -> str | None:
    """Why no headless Chromium can run here, or None when it can."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install {package}, or make system-deps)"
    return None


def require_browser() -> None:
    """Skip the calling test when Chromium cannot run; under CI=true fail instead."""
    require(unavailable_reason())


def start_driver(size: WindowSize = PHONE) -> WebDriver:
    """A headless Chromium with the console log kept (blocking: call it outside the loop)."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's own sandbox cannot start there
        "--disable-dev-shm-usage",
        f"--window-size={size.width},{size.height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@contextmanager
def running_browser(size: WindowSize = PHONE) -> Iterator[Browser]:
    """Start Chromium (skipping or failing as `require_browser` says) and quit it afterwards."""
    require_browser()
    driver = start_driver(size)
    try:
        browser = Browser(driver)
        browser.emulate(size)
        yield browser
    finally:
        driver.quit()


class Browser:
    """One Chromium window; async methods, each running its selenium calls in a thread."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver
        self._injected: list[str] = []

    async def inject(self, script: str) -> None:
        """Run `script` in every page loaded from now on, before the page's own scripts (as a
        Telegram client defines `window.Telegram.WebApp`); `reset` removes it."""
        added = await asyncio.to_thread(
            self.driver.execute_cdp_cmd, "Page.addScriptToEvaluateOnNewDocument", {"source": script}
        )
        self._injected.append(str(added["identifier"]))

    async def open(self, url: str) -> None:
        """Load `url` (returns once the document has loaded, not once the page rendered)."""
        await asyncio.to_thread(self.driver.get, url)

    async def reset(self) -> None:
        """A blank page, no cookies, no cache, nothing injected: the next test starts as a new
        visitor. (Cookies are per host, not per port: two opsgates on 127.0.0.1 would share
        them otherwise.)"""

        def blank() -> None:
            self.driver.get("about:blank")
            for identifier in self._injected:
                self.driver.execute_cdp_cmd(
                    "Page.removeScriptToEvaluateOnNewDocument", {"identifier": identifier}
                )
            self._injected.clear()
            self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
            self.driver.execute_cdp_cmd("Network.clearBrowserCache", {})
            self._console()  # forget the previous page's console lines

        await asyncio.to_thread(blank)

    async def run(self, script: str, *args: object) -> Any:
        """`script` run in the page (`return ...` gives its value back)."""
        return await asyncio.to_thread(self.driver.execute_script, script, *args)

    async def texts(self, selector: str) -> list[str]:
        """The visible text of every element matching `selector`, in document order."""
        return list(await self.run(_TEXTS, selector))

    async def attributes(self, selector: str, name: str) -> list[str | None]:
        """Attribute `name` of every element matching `selector` (None where it is absent)."""
        return list(await self.run(_ATTRIBUTES, selector, name))

    async def wait_css(self, selector: str, timeout: float = WAIT_S) -> str:
        """Wait until `selector` matches; the first match's text."""
        matches: list[str] = await self._wait(
            lambda: self.driver.execute_script(_TEXTS, selector),  # a list: [""] counts too
            f"an element matching {selector!r}",
            selector,
            timeout,
        )
        return matches[0]

    async def wait_text(self, selector: str, text: str, timeout: float = WAIT_S) -> str:
        """Wait until an element matching `selector` contains `text`; that element's text."""
        return await self._wait(
            lambda: next(
                (t for t in self.driver.execute_script(_TEXTS, selector) if text in t), None
            ),
            f"{text!r} in {selector!r}",
            selector,
            timeout,
        )

    async def wait_gone(self, selector: str, timeout: float = WAIT_S) -> None:
        """Wait until nothing matches `selector`."""
        await self._wait(
            lambda: not self.driver.execute_script(_TEXTS, selector),
            f"no element matching {selector!r}",
            selector,
            timeout,
        )

    async def wait_js(self, expression: str, what: str, timeout: float = WAIT_S) -> Any:
        """Wait until the JavaScript `expression` is truthy; its value."""
        return await self._wait(
            lambda: self.driver.execute_script(f"return ({expression});"), what, None, timeout
        )

    async def click(self, selector: str, timeout: float = WAIT_S) -> None:
        """Click the first element matching `selector` as a user would, once it can be."""

        def clicked() -> bool:
            try:
                self.driver.find_element(By.CSS_SELECTOR, selector).click()
            except (
                NoSuchElementException,
                StaleElementReferenceException,  # re-rendered between finding and clicking
                ElementNotInteractableException,
                ElementClickInterceptedException,
            ):
                return False
            return True

        await self._wait(clicked, f"a clickable {selector!r}", selector, timeout)

    async def screenshot(self, path: Path, size: WindowSize | None = None) -> None:
        """Save a PNG of the window, resized to `size` first when given."""

        def take() -> None:
            if size is not None:
                self.emulate(size)
            if not self.driver.get_screenshot_as_file(str(path)):
                raise OSError(f"could not write the screenshot {path}")

        await asyncio.to_thread(take)

    async def set_size(self, size: WindowSize) -> None:
        await asyncio.to_thread(self.emulate, size)

    def emulate(self, size: WindowSize) -> None:
        """The viewport set to `size` exactly (a window's size includes what is not page)."""
        self.driver.set_window_size(size.width, size.height + 200)  # room for the viewport
        metrics = {"width": size.width, "height": size.height, "deviceScaleFactor": 1}
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", metrics | {"mobile": size.mobile}
        )

    async def disable_cache(self) -> None:
        """Every later load fetches everything again (DevTools' "Disable cache"), cold."""

        def disable() -> None:
            self.driver.execute_cdp_cmd("Network.enable", {})
            self.driver.execute_cdp_cmd("Network.clearBrowserCache", {})
            self.driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})

        await asyncio.to_thread(disable)

    async def console(self) -> list[str]:
        """Browser console lines since the last call (JavaScript errors among them)."""
        return await asyncio.to_thread(self._console)

    def _console(self) -> list[str]:
        try:
            entries = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        except WebDriverException:
            return []
        return [f"{e.get('level')}: {e.get('message')}" for e in entries]

    async def _wait(
        self, probe: Callable[[], T | None], what: str, selector: str | None, timeout: float
    ) -> T:
        return await asyncio.to_thread(self._poll, probe, what, selector, timeout)

    def _poll(
        self, probe: Callable[[], T | None], what: str, selector: str | None, timeout: float
    ) -> T:
        """Call `probe` until it gives something truthy (in this thread, never on the loop)."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                found = probe()
            except WebDriverException as exc:  # e.g. a navigation in the middle of a script
                found, last_error = None, f"{type(exc).__name__}: {exc.msg}"
            if found:
                return found
            if time.monotonic() >= deadline:
                raise BrowserTimeout(self._describe(what, selector, timeout, last_error))
            time.sleep(POLL_S)  # a worker thread: the event loop runs on meanwhile

    def _describe(self, what: str, selector: str | None, timeout: float, error: str) -> str:
        """What the page showed instead of `what`: for the failure message."""
        lines = [f"waited {timeout:g} s for {what}, in vain"]
        try:
            lines.append(f"url: {self.driver.current_url}")
            if selector is not None:
                matches = self.driver.execute_script(_TEXTS, selector)
                shown = "\n  ".join(repr(m) for m in matches) if matches else "no element"
                lines.append(f"{selector} now:\n  {shown}")
            page = str(self.driver.execute_script(_PAGE_TEXT))
            lines.append(f"page text:\n{page[:PAGE_TEXT_CHARS]}")
        except WebDriverException as exc:
            lines.append(f"(the page could not be read: {exc.msg})")
        if error:
            lines.append(f"last error: {error}")
        console = self._console()
        lines.append("console:\n" + ("\n".join(console) if console else "(empty)"))
        return "\n".join(lines)
