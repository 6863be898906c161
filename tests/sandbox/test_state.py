"""SandboxState without HTTP: update confirmation, long polling, versions, flood windows."""

import asyncio
import time

import pytest

from bot.dev.sandbox.state import Flood, PollConflict, SandboxState


def state_with_updates(count: int) -> SandboxState:
    state = SandboxState()
    for i in range(count):
        state.user_send(1, 1, f"m{i}", None)
    return state


async def test_updates_stay_until_confirmed() -> None:
    state = state_with_updates(3)
    ids = [u["update_id"] for u in await state.next_updates(100, 0, None)]
    assert len(ids) == 3
    state.confirm(ids[1])
    assert [u["update_id"] for u in state.updates] == ids[1:]
    state.confirm(-1)
    assert [u["update_id"] for u in state.updates] == ids[2:]


async def test_limit_and_allowed_updates() -> None:
    state = state_with_updates(3)
    assert len(await state.next_updates(2, 0, None)) == 2
    assert await state.next_updates(100, 0, ["callback_query"]) == []
    assert len(await state.next_updates(100, 0, [])) == 3  # empty list means all types


async def test_long_poll_returns_when_an_update_arrives() -> None:
    state = SandboxState()
    started = time.monotonic()
    poll = asyncio.create_task(state.next_updates(100, 5, None))
    await asyncio.sleep(0.05)
    state.user_send(1, 1, "hello", None)
    [update] = await poll
    assert update["message"]["text"] == "hello" and time.monotonic() - started < 1


async def test_long_poll_times_out_empty() -> None:
    started = time.monotonic()
    assert await SandboxState().next_updates(100, 0.1, None) == []
    assert time.monotonic() - started >= 0.1


async def test_a_newer_poll_terminates_the_older_one() -> None:
    state = SandboxState()
    older = asyncio.create_task(state.next_updates(100, 5, None))
    await asyncio.sleep(0.01)
    newer = asyncio.create_task(state.next_updates(100, 0.05, None))
    with pytest.raises(PollConflict):
        await older
    assert await newer == []


async def test_version_moves_on_changes_and_survives_reset() -> None:
    state = SandboxState()
    before = state.version
    waiter = asyncio.create_task(state.wait_change(before, 5))
    await asyncio.sleep(0.01)
    state.user_send(1, 1, "hi", None)
    assert await waiter > before
    after = state.version
    state.reset()
    assert state.version > after and state.messages == {}
    assert await state.wait_change(state.version, 0.01) == state.version


def test_private_chats_appear_for_known_users_only() -> None:
    state = SandboxState()
    assert state.chat(9) is None
    state.user(9)
    chat = state.chat(9)
    assert chat is not None and chat.type == "private" and chat.to_api()["first_name"] == "user9"


def test_press_needs_an_existing_message() -> None:
    state = state_with_updates(1)
    with pytest.raises(LookupError):
        state.user_press(1, 1, 99, "x")
    pressed = state.user_press(1, 1, 1, "anything")
    assert state.callbacks[pressed["callback_query_id"]].data == "anything"


def test_flood_windows() -> None:
    flood = Flood()
    assert flood.retry_after(1, True) == 0  # unlimited by default
    flood.per_chat_per_minute, flood.global_per_second = 2, 3
    for chat in (1, 1, 2):
        assert flood.retry_after(chat, True) == 0
        flood.record(chat, True)
    assert 59 <= flood.retry_after(1, False) <= 60  # chat 1 is full for a minute
    assert flood.retry_after(2, False) == 0
    assert flood.retry_after(2, True) == 1  # but the global second is used up
