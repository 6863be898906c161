"""What the HTTP side and the plans need from the flags, built from the running services.

`LiveFlagSource` evaluates from the store's in-memory snapshot and the ops file's segments;
`FlagdExporter` keeps a flagd flag-definition file in step with them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from config.opsfile import OpsConfig
from services.flags import engine
from services.flags.bucketing import BucketingScheme
from services.flags.flagd import export_flagd, write_flagd_file
from services.flags.store import FlagStore
from services.flags.types import Evaluation, EvaluationContext
from services.flags.usage import EvaluationTally


@dataclass(frozen=True)
class _PerOpsFile:
    ops: OpsConfig
    segments: engine.Segments
    scheme: BucketingScheme
    digest: str


class LiveFlagSource:
    """The OFREP FlagSource over the live store; segments come from the current ops file."""

    def __init__(self, store: FlagStore, ops: Callable[[], OpsConfig]) -> None:
        self._store = store
        self._ops = ops
        self.tally = EvaluationTally()  # what was served, for /metrics and /flag KEY
        # Per ops file (/reload replaces the OpsConfig whole): the segments, the bucketing
        # scheme and their digest, read once per request from one place.
        self._cached: _PerOpsFile | None = None

    def _current(self) -> _PerOpsFile:
        ops = self._ops()
        cached = self._cached
        if cached is None or cached.ops is not ops:
            declared = sorted((k, v.model_dump_json()) for k, v in ops.segments.items())
            digest = hashlib.sha256(repr((declared, ops.flag_bucketing)).encode()).hexdigest()
            cached = self._cached = _PerOpsFile(
                ops,
                engine.segments_of(ops.segments),
                BucketingScheme(ops.flag_bucketing),
                digest[:12],  # the scheme too: it changes who is in a rollout
            )
        return cached

    def etag(self) -> str:
        # Segments change with /reload, and they change evaluations as much as flags do.
        return f"{self._store.snapshot().etag}-{self._current().digest}"

    def evaluate(self, key: str, ctx: EvaluationContext) -> Evaluation:
        current = self._current()
        flag = self._store.snapshot().get(key)
        answer = engine.evaluate(flag, key, ctx, current.segments, current.scheme)
        self.tally.count(answer, ctx.targeting_key)
        return answer

    def evaluate_all(self, ctx: EvaluationContext) -> list[Evaluation]:
        current = self._current()
        flags = self._store.snapshot().flags.values()
        answers = engine.evaluate_all(flags, ctx, current.segments, current.scheme)
        for answer in answers:
            self.tally.count(answer, ctx.targeting_key)
        return answers


class FlagdExporter:
    """Keeps the ops file's `flagd_file` in step with the flags (written atomically)."""

    def __init__(self, store: FlagStore, ops: Callable[[], OpsConfig]) -> None:
        self._store = store
        self._ops = ops
        self._written: tuple[str, str] | None = None  # (path, etag) last written

    async def export_if_changed(self) -> Path | None:
        """Write the file when the flags or segments changed since the last write."""
        ops = self._ops()
        if ops.bot.flagd_file is None:
            return None
        path = Path(ops.bot.flagd_file)
        etag = LiveFlagSource(self._store, self._ops).etag()
        if self._written == (str(path), etag):
            return None
        flags = self._store.snapshot().flags.values()
        scheme = BucketingScheme(ops.flag_bucketing)
        document = export_flagd(flags, engine.segments_of(ops.segments), scheme)
        await asyncio.to_thread(write_flagd_file, path, document)  # fsyncs: off the loop
        self._written = (str(path), etag)
        return path
