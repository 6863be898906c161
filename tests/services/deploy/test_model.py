from datetime import UTC, datetime, timedelta

import pytest

from services.deploy.model import (
    BEFORE_SWITCH,
    TERMINAL,
    WORKING,
    DeploymentKind,
    IllegalTransition,
    check_transition,
    ends_deployment,
    next_states,
    state_durations,
)
from services.deploy.model import DeploymentState as S
from services.records.audit import Event

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def reachable(kind: DeploymentKind, dry_run: bool = False) -> set[S]:
    seen, todo = {S.REQUESTED}, [S.REQUESTED]
    while todo:
        for following in next_states(todo.pop(), kind, dry_run):
            if following not in seen:
                seen.add(following)
                todo.append(following)
    return seen


@pytest.mark.parametrize("kind", list(DeploymentKind))
@pytest.mark.parametrize("dry_run", [False, True])
def test_endings_failures_and_cancels_for_every_kind(kind: DeploymentKind, dry_run: bool) -> None:
    for state in S:
        following = next_states(state, kind, dry_run)
        if state in TERMINAL:
            assert following == frozenset(), state
        assert (S.FAILED in following) == (state in WORKING), state
        assert (S.CANCELLED in following) == (state in BEFORE_SWITCH), state
    assert TERMINAL | WORKING | {S.FAILED, S.ROLLING_BACK} == set(S)


def test_what_each_kind_can_reach() -> None:
    assert reachable(DeploymentKind.DEPLOY) == set(S)
    # A rollback has a release already; it never builds one.
    assert reachable(DeploymentKind.ROLLBACK) == set(S) - {S.BUILDING}
    assert reachable(DeploymentKind.DRILL) == set(S) - {S.BUILDING}
    assert reachable(DeploymentKind.RESTORE) == set(S) - {S.BUILDING}
    # A dry run changes nothing: no build, no switch, so nothing to roll back either.
    for kind in DeploymentKind:
        assert reachable(kind, dry_run=True) == set(S) - {
            S.BUILDING,
            S.SWITCHING,
            S.VERIFYING,
            S.WATCHING,
            S.ROLLING_BACK,
            S.ROLLED_BACK,
            S.ROLLBACK_FAILED,
        }


def test_kind_specific_edges() -> None:
    assert S.SWITCHING not in next_states(S.PRE_CHECKS, DeploymentKind.DEPLOY)
    assert S.SWITCHING in next_states(S.APPROVED, DeploymentKind.ROLLBACK)
    assert S.SWITCHING in next_states(S.VERIFYING, DeploymentKind.DRILL)  # roll forward
    assert S.SWITCHING not in next_states(S.VERIFYING, DeploymentKind.DEPLOY)
    assert S.SUCCEEDED not in next_states(S.PRE_CHECKS, DeploymentKind.DEPLOY)
    # A restore always checks its point first, and never switches twice.
    assert S.SWITCHING not in next_states(S.APPROVED, DeploymentKind.RESTORE)
    assert S.SWITCHING in next_states(S.PRE_CHECKS, DeploymentKind.RESTORE)
    assert S.SWITCHING not in next_states(S.VERIFYING, DeploymentKind.RESTORE)
    assert S.SUCCEEDED in next_states(S.PRE_CHECKS, DeploymentKind.DEPLOY, dry_run=True)


def test_check_transition_messages() -> None:
    check_transition(7, S.BUILDING, S.SWITCHING)
    with pytest.raises(IllegalTransition, match="#7 cannot go from requested to building"):
        check_transition(7, S.REQUESTED, S.BUILDING)
    for state in (S.SWITCHING, S.VERIFYING, S.WATCHING, S.FAILED, S.ROLLING_BACK):
        with pytest.raises(IllegalTransition, match=f"too late to cancel #7.*{state}"):
            check_transition(7, state, S.CANCELLED)
    with pytest.raises(IllegalTransition, match="cannot go from succeeded to failed"):
        check_transition(7, S.SUCCEEDED, S.FAILED)


def test_a_failure_ends_the_deployment_only_before_switching() -> None:
    assert ends_deployment(S.BUILDING, S.FAILED)
    assert ends_deployment(S.REQUESTED, S.FAILED)
    assert not ends_deployment(S.SWITCHING, S.FAILED)
    assert not ends_deployment(S.WATCHING, S.FAILED)
    assert ends_deployment(S.ROLLING_BACK, S.ROLLBACK_FAILED)
    assert ends_deployment(S.WATCHING, S.SUCCEEDED)
    assert not ends_deployment(S.FAILED, S.ROLLING_BACK)


def test_state_durations_from_events() -> None:
    def event(n: int, seconds: int, to: str) -> Event:
        return Event(n, T0 + timedelta(seconds=seconds), f"deploy.{to}", "1", "web", {"to": to})

    events = [
        event(1, 0, "requested"),
        event(2, 3, "approved"),
        Event(3, T0 + timedelta(seconds=4), "deploy.refused", "2", "web", {}),  # not a move
        event(4, 10, "pre_checks"),
        event(5, 25, "failed"),
    ]
    assert state_durations(events, until=T0 + timedelta(seconds=30)) == [
        (S.REQUESTED, timedelta(seconds=3)),
        (S.APPROVED, timedelta(seconds=7)),
        (S.PRE_CHECKS, timedelta(seconds=15)),
        (S.FAILED, timedelta(seconds=5)),
    ]
    assert state_durations([], until=T0) == []
