"""A GET load from N threads that each reuse ONE keep-alive connection, as naive clients do.

    with KeepAliveLoad(port, threads=4, idle_s=(0.02, 0.1)) as load:
        since = load.now()
        proxy.change_weights()                    # or `nginx -s reload`, a deploy...
        load.wait_for_count(300, since=since)
    assert load.failures == []
    load.split(since=since)                       # Counter({"blue": 226, "green": 74})

Each thread sends a request on its connection, reads the answer, sleeps a random gap drawn
from `idle_s` (so connections sit idle, as between a real client's requests) and sends the
next one on the same connection WITHOUT checking whether the server closed it meanwhile. A
server that drops an idle keep-alive connection (nginx's old workers do on every reload) thus
costs that client its next request: recorded as a failure, with the time, and the thread
opens a new connection. A server that announces the close (`Connection: close`) costs
nothing: http.client reconnects for the next request, as any client would.

Each answer's side is its X-Served-By header (set by the HAProxy harness) or else the JSON
body's "version" (the test app's GET /), or else the body itself.
"""

from __future__ import annotations

import http.client
import json
import random
import time
from collections import Counter
from dataclasses import dataclass

from bot.dev.harness.load import REQUEST_TIMEOUT_S, ThreadedLoad

SERVED_BY = "X-Served-By"


@dataclass(frozen=True)
class KeepAliveResult:
    at: float  # seconds since the load started, when the request was sent
    thread: int  # which load thread (and so which client) sent it
    reused: bool  # sent on a socket still open from an earlier answer (else a new one)
    status: int | None  # None when the request raised
    side: str | None  # who answered: X-Served-By, else the JSON "version", else the body
    body: str | None
    error: str | None  # "ExceptionType: message" when the request raised

    @property
    def ok(self) -> bool:
        return self.status == 200

    def describe(self) -> str:
        if self.error is not None:
            reuse = "reused" if self.reused else "new"
            return f"{self.error} (thread {self.thread}, {reuse} connection)"
        return f"HTTP {self.status} from {self.side}: {(self.body or '')[:200]}"


def side_of(served_by: str | None, body: str) -> str:
    """X-Served-By when present, else the body's JSON "version", else the body."""
    if served_by:
        return served_by
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if isinstance(payload, dict) and isinstance(payload.get("version"), str):
        version: str = payload["version"]
        return version
    return body


class KeepAliveLoad(ThreadedLoad[KeepAliveResult]):
    """GET http://127.0.0.1:PORT/PATH from `threads` threads, one persistent connection each.

    `idle_s` = (low, high): each thread sleeps a gap drawn uniformly from it between requests;
    (x, x) for a fixed gap. Every request is recorded (status, side and body, or the error).
    """

    def __init__(
        self,
        port: int,
        threads: int = 4,
        path: str = "/",
        idle_s: tuple[float, float] = (0.02, 0.1),
        host: str = "127.0.0.1",
    ) -> None:
        low, high = idle_s
        if not 0 <= low <= high:
            raise ValueError(f"idle_s must be (low, high) with 0 <= low <= high, not {idle_s}")
        super().__init__(threads, "keepalive")
        self.host = host
        self.port = port
        self.path = path
        self.idle_s = idle_s
        self._connections_opened = 0

    def _connect(self) -> http.client.HTTPConnection:
        with self._lock:
            self._connections_opened += 1
        # No socket yet: http.client connects on the first request.
        return http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_S)

    def _run(self, index: int) -> None:
        rng = random.Random(index)  # per thread: the gaps of one run are reproducible
        connection = self._connect()
        try:
            while not self._stopping.is_set():
                # A socket left open by the last answer is reused as it is, unchecked.
                reused = connection.sock is not None
                result = self._one_request(connection, index, reused)
                if result.error is not None:
                    # The failure is recorded; a fresh connection for the next request, as a
                    # client retrying after an error would open.
                    connection.close()
                    connection = self._connect()
                self._record(result)
                self._stopping.wait(rng.uniform(*self.idle_s))  # wakes at once on stop()
        finally:
            connection.close()

    def _one_request(
        self, connection: http.client.HTTPConnection, index: int, reused: bool
    ) -> KeepAliveResult:
        at = self.now()
        try:
            connection.request("GET", self.path)
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
            side = side_of(response.getheader(SERVED_BY), body)
            return KeepAliveResult(at, index, reused, response.status, side, body, None)
        except Exception as exc:  # every failure is a data point, not a crash of the load
            error = f"{type(exc).__name__}: {exc}"
            return KeepAliveResult(at, index, reused, None, None, None, error)

    @property
    def connections_opened(self) -> int:
        """HTTPConnection objects made: one per thread at start, one more after each failure
        (http.client also reopens the socket itself after an announced close)."""
        with self._lock:
            return self._connections_opened

    def between(self, since: float = 0.0, until: float | None = None) -> list[KeepAliveResult]:
        """Results of requests sent in [since, until) on the load's clock."""
        return [r for r in self.results if r.at >= since and (until is None or r.at < until)]

    def split(self, since: float = 0.0, until: float | None = None) -> Counter[str]:
        """How many 200 answers each side gave, for requests sent in [since, until)."""
        return Counter(r.side for r in self.between(since, until) if r.ok and r.side is not None)

    def wait_for_count(self, count: int, since: float = 0.0, timeout: float = 10.0) -> None:
        """Block until `count` requests sent at or after `since` have a result."""
        self._wait(lambda fresh: sum(r.at >= since for r in fresh), count, timeout, "results")

    def wait_for_side(self, side: str, timeout: float = 5.0) -> float:
        """Block until a request sent after this call is answered 200 by `side`; the seconds
        that took. TimeoutError with the recent answers otherwise."""
        called, since = time.monotonic(), self.now()
        self._wait(
            lambda fresh: sum(r.at >= since and r.ok and r.side == side for r in fresh),
            1,
            timeout,
            f"200 from {side!r}",
        )
        return time.monotonic() - called
