"""What every request load of the harness shares: N threads sending until stopped, every
result recorded under a lock, a clock since the start, and waiting for a kind of answer.

A load subclasses ThreadedLoad with its result type and its `_run(index)`, which calls
`_record` for each request it made until `_stopping` is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

REQUEST_TIMEOUT_S = 5.0


class LoadResult(Protocol):
    @property
    def at(self) -> float: ...  # seconds since the load started, when the request was sent

    @property
    def ok(self) -> bool: ...

    def describe(self) -> str: ...


R = TypeVar("R", bound=LoadResult)


class ThreadedLoad(Generic[R]):
    def __init__(self, threads: int, name: str) -> None:
        self._thread_count = threads
        self._name = name
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._results: list[R] = []
        self._new_result = threading.Condition(self._lock)
        self._started = 0.0

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._started = time.monotonic()
        for index in range(self._thread_count):
            thread = threading.Thread(
                target=self._run, args=(index,), name=f"{self._name}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_S * 2)  # a request in flight ends by its timeout

    def _run(self, index: int) -> None:
        raise NotImplementedError

    def _record(self, result: R) -> None:
        with self._lock:
            self._results.append(result)
            self._new_result.notify_all()

    def now(self) -> float:
        """The load's clock (seconds since start), the one each result's `at` uses."""
        return time.monotonic() - self._started

    @property
    def results(self) -> list[R]:
        with self._lock:
            return list(self._results)

    @property
    def total(self) -> int:
        with self._lock:
            return len(self._results)

    @property
    def failures(self) -> list[tuple[float, str]]:
        """(seconds since start, description) for each non-200 answer or error."""
        return [(r.at, r.describe()) for r in self.results if not r.ok]

    def _wait(
        self, counts: Callable[[list[R]], int], wanted: int, timeout: float, what: str
    ) -> None:
        """Until `counts` over the results that come in has added up to `wanted` (results
        already in count too); TimeoutError with the recent answers otherwise."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new_result:
            checked = 0
            while True:
                fresh = self._results[checked:]
                checked += len(fresh)
                seen += counts(fresh)
                if seen >= wanted:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    recent = [r.describe() for r in self._results[-5:]]
                    raise TimeoutError(
                        f"{seen} of {wanted} {what} within {timeout}s; last: {recent}"
                    )
                self._new_result.wait(remaining)
