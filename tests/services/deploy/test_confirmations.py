import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from services.deploy.confirmations import Confirmations, ConfirmationState, StaleConfirmation
from services.records.audit import AuditLog
from services.records.storage import Storage


async def test_confirm_once_and_audit(tmp_path: Path, database: str) -> None:
    async with Storage(database) as storage:
        audit = AuditLog(storage)
        confirmations = Confirmations(storage, audit)
        opened = await confirmations.open("restart", "web", 1001, -100, timedelta(minutes=5))
        assert opened.state is ConfirmationState.OPEN
        # Two presses at once: exactly one wins.
        results = await asyncio.gather(
            confirmations.decide(opened.id, "restart", ConfirmationState.CONFIRMED, 1001),
            confirmations.decide(opened.id, "restart", ConfirmationState.CANCELLED, 1003),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        assert len(winners) == 1
        assert isinstance(next(r for r in results if r not in winners), StaleConfirmation)
        kinds = [e.kind for e in await audit.events(subject="web")]
        assert kinds[0] == "restart.requested"
        assert len(kinds) == 2


async def test_expired_wrong_action_or_unknown_is_stale(tmp_path: Path, database: str) -> None:
    async with Storage(database) as storage:
        confirmations = Confirmations(storage, AuditLog(storage))
        expired = await confirmations.open("restart", "web", 1, -1, timedelta(seconds=-1))
        with pytest.raises(StaleConfirmation):
            await confirmations.decide(expired.id, "restart", ConfirmationState.CONFIRMED, 1)
        fresh = await confirmations.open("restart", "web", 1, -1, timedelta(minutes=1))
        with pytest.raises(StaleConfirmation):
            await confirmations.decide(fresh.id, "deploy", ConfirmationState.CONFIRMED, 1)
        with pytest.raises(StaleConfirmation):
            await confirmations.decide(99999, "restart", ConfirmationState.CONFIRMED, 1)
        assert (await confirmations.get(fresh.id)).state is ConfirmationState.OPEN
