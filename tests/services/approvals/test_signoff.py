"""Sign-off requests against a real SQLite file, the real Deployments and AuditLog, and a
clock the tests move by hand: policies from the ops file, ticks, approvals, refusals that
change nothing, rejections, evidence, timers, and presses that arrive too late or forged."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from config.approvals import ChecklistItem
from config.opsfile import OpsConfig, OpsFileError, parse_ops_text
from services.approvals.model import (
    ApprovalRefused,
    ApprovalRequest,
    ButtonNoLongerValid,
    Item,
    Policy,
    PolicyRole,
    RequestStatus,
    RoleSignoff,
    deploy_policy,
    rollback_policy,
)
from services.approvals.signoff import Approvals
from services.deploy.deployments import Deployment, DeploymentKind, Deployments, DeploymentState
from services.records.audit import AuditLog
from services.records.storage import Storage

S = DeploymentState
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ALICE, BOB, CAROL, DAVE, ERIN = "1", "2", "3", "4", "5"
ORIGIN = (-100, 7)
HOLDER = {"qa": BOB, "security": CAROL, "oncall": DAVE, "sre": DAVE}  # one member of each

OPS_TEXT = """
[people]
1 = "alice"
2 = "bob"
3 = "carol"
4 = "dave"
5 = "erin"

[roles]
qa = [2, 5]
security = [3]
sre = [1, 3, 4]
oncall = [4]

[approvals]
reminder_s = 60
escalate_s = 120
expire_s = 300
escalation_role = "sre"
one_role_per_person = true
rollback_roles = ["oncall"]

[approvals.checklists.qa]
items = [
    { key = "regression", text = "Regression suite green" },
    { key = "perf", text = "Load test", required = false },
]

[approvals.checklists.security]
items = [{ key = "scan", text = "Dependency scan clean" }]

[environments.production.approval]
roles = { qa = 1, security = 1 }

[environments.staging]

[services.web]
environment = "production"
manager = "systemd"
unit = "web.service"

[services.api]
environment = "production"
manager = "systemd"
unit = "api.service"
"""
OPS = parse_ops_text(OPS_TEXT)


def variant(old: str, new: str) -> str:
    # A replacement that matched nothing would quietly test the base file instead.
    assert old in OPS_TEXT
    return OPS_TEXT.replace(old, new)


class World:
    """One database, the real services on it, and the clock: `now`, moved by the test."""

    def __init__(self, storage: Storage, ops: OpsConfig) -> None:
        self.now = T0
        self.ops = ops
        self.audit = AuditLog(storage)
        self.deployments = Deployments(storage, self.audit, self.clock)
        self.approvals = Approvals(
            storage, self.audit, self.deployments, lambda: self.ops, self.clock
        )

    def clock(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = T0 + timedelta(seconds=seconds)

    async def open(
        self,
        service: str = "web",
        requester: str = ALICE,
        policy: Policy | None = None,
        kind: DeploymentKind = DeploymentKind.DEPLOY,
    ) -> ApprovalRequest:
        deployment = await self.deployments.request(
            service, "production", "v2", requester, kind=kind
        )
        policy = policy or deploy_policy(self.ops, "production")
        assert policy is not None
        return await self.approvals.open(deployment, policy, origin=ORIGIN)

    async def deployment(self, request: ApprovalRequest) -> Deployment:
        return await self.deployments.get(request.deployment_id)

    async def snapshot(self, request: ApprovalRequest) -> tuple[ApprovalRequest, Deployment, int]:
        """Everything a press could change: the request, its deployment, the audit trail."""
        current = await self.approvals.get(request.id)
        return current, await self.deployment(request), len(await self.audit.events())

    async def kinds(self) -> list[str]:
        return [e.kind for e in await self.audit.events() if e.kind.startswith("approval.")]


class MakeWorld(Protocol):
    def __call__(self, ops: OpsConfig = ...) -> World: ...


@pytest.fixture
async def storage(tmp_path: Path, database: str) -> AsyncIterator[Storage]:
    async with Storage(database) as storage:
        yield storage


@pytest.fixture
def make_world(storage: Storage) -> MakeWorld:
    def make(ops: OpsConfig = OPS) -> World:
        return World(storage, ops)

    return make


def role_of(request: ApprovalRequest, name: str) -> RoleSignoff:
    [role] = [r for r in request.roles if r.role == name]
    return role


def item_of(request: ApprovalRequest, key: str) -> Item:
    [item] = [i for r in request.roles for i in r.items if i.key == key]
    return item


async def tick_and_approve(world: World, request: ApprovalRequest, role: str) -> ApprovalRequest:
    for item in role_of(request, role).items:
        if item.required:
            await world.approvals.tick(item.id, HOLDER[role], True)
    request, changed = await world.approvals.approve(role_of(request, role).id, HOLDER[role])
    assert changed
    return request


async def refused(
    world: World,
    request: ApprovalRequest,
    press: Coroutine[Any, Any, object],
    message: str,
    error: type[Exception] = ApprovalRefused,
) -> None:
    """The press is refused with `message` and leaves request, deployment and trail alone."""
    before = await world.snapshot(request)
    with pytest.raises(error, match=re.escape(message)):
        await press
    assert await world.snapshot(request) == before


async def assert_presses_dead(world: World, request: ApprovalRequest) -> None:
    """Every button of an ended request answers "no longer valid", even for role holders."""
    before = await world.snapshot(request)
    for role in request.roles:
        who = HOLDER[role.role]
        for item in role.items:
            for ticked in (True, False):
                with pytest.raises(ButtonNoLongerValid):
                    await world.approvals.tick(item.id, who, ticked)
        with pytest.raises(ButtonNoLongerValid):
            await world.approvals.approve(role.id, who)
        with pytest.raises(ButtonNoLongerValid):
            await world.approvals.start_rejection(role.id, who)
    assert await world.snapshot(request) == before


# -- config ----------------------------------------------------------------------------------


def test_policies_from_the_ops_file() -> None:
    production = deploy_policy(OPS, "production")
    assert production == Policy(
        (
            PolicyRole(
                "qa",
                1,
                (
                    ChecklistItem(key="regression", text="Regression suite green"),
                    ChecklistItem(key="perf", text="Load test", required=False),
                ),
            ),
            PolicyRole("security", 1, (ChecklistItem(key="scan", text="Dependency scan clean"),)),
        )
    )
    assert deploy_policy(OPS, "staging") is None
    assert deploy_policy(OPS, "nowhere") is None
    assert rollback_policy(OPS, "production") == Policy(
        (PolicyRole("oncall", 1, ()),), any_role=True
    )
    assert rollback_policy(OPS, "staging") is None  # deploys there need nobody: nor rollbacks
    # `requires_approval` alone: one admin, no checklist (and no rollback roles: no policy).
    plain = parse_ops_text(
        '[people]\n1 = "alice"\n[roles]\nadmin = [1]\n'
        "[environments.production]\nrequires_approval = true\n"
    )
    assert deploy_policy(plain, "production") == Policy((PolicyRole("admin", 1, ()),))
    assert rollback_policy(plain, "production") is None


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            "roles = { qa = 1, security = 1 }",
            "roles = { qa = 1, release = 1 }",
            "environments.production.approval.roles.release: no role 'release' in [roles]",
        ),
        (
            'rollback_roles = ["oncall"]',
            'rollback_roles = ["oncall", "pager"]',
            "approvals.rollback_roles[1]: no role 'pager' in [roles]",
        ),
        ("reminder_s = 60", "reminder_s = 120", "reminder_s < escalate_s < expire_s"),
        ("reminder_s = 60", "reminder_s = 200", "reminder_s < escalate_s < expire_s"),
        ("expire_s = 300", "expire_s = 120", "reminder_s < escalate_s < expire_s"),
    ],
)
def test_bad_approval_config_is_refused(old: str, new: str, problem: str) -> None:
    with pytest.raises(OpsFileError) as caught:
        parse_ops_text(variant(old, new))
    assert any(problem in line for line in caught.value.problems), caught.value.problems


# -- opening and signing off -----------------------------------------------------------------


async def test_open_awaits_approval_with_roles_items_and_timers(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    deployment = await world.deployment(request)
    assert deployment.state is S.AWAITING_APPROVAL
    assert (request.status, request.requester, request.any_role) == (
        RequestStatus.OPEN,
        ALICE,
        False,
    )
    assert (request.origin_chat_id, request.origin_message_id) == ORIGIN
    assert [(r.role, r.needed) for r in request.roles] == [("qa", 1), ("security", 1)]
    assert [[(i.key, i.required) for i in r.items] for r in request.roles] == [
        [("regression", True), ("perf", False)],
        [("scan", True)],
    ]
    assert all(i.ticked_by is None for r in request.roles for i in r.items)
    assert (request.remind_at, request.escalate_at, request.expires_at) == (
        T0 + timedelta(seconds=60),
        T0 + timedelta(seconds=120),
        T0 + timedelta(seconds=300),
    )
    assert not request.met and request.waiting_on == request.roles
    [event] = await world.audit.events(kind="approval.requested")
    assert (event.actor, event.subject) == (ALICE, "web")
    assert event.data == {
        "deployment": deployment.id,
        "request": request.id,
        "roles": {"qa": 1, "security": 1},
        "any_role": False,
    }
    assert (await world.approvals.for_deployment(deployment.id)) == request


async def test_full_sign_off_approves_the_deployment(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    qa, security = request.roles
    ticked, changed = await world.approvals.tick(item_of(request, "regression").id, BOB, True)
    assert changed
    assert item_of(ticked, "regression").ticked_by == BOB
    assert item_of(ticked, "regression").ticked_at == T0
    world.at(30)
    after_qa, _ = await world.approvals.approve(qa.id, BOB)
    assert after_qa.is_open and role_of(after_qa, "qa").met
    assert after_qa.waiting_on == (role_of(after_qa, "security"),)
    assert (await world.deployment(request)).state is S.AWAITING_APPROVAL  # security owes one
    await world.approvals.tick(item_of(request, "scan").id, CAROL, True)
    done, changed = await world.approvals.approve(security.id, CAROL)
    assert changed
    assert (done.status, done.ended_by, done.reason, done.ended_at) == (
        RequestStatus.APPROVED,
        CAROL,
        "policy met",
        T0 + timedelta(seconds=30),
    )
    assert done.met and done.waiting_on == ()
    assert item_of(done, "perf").ticked_by is None  # optional: never needed a tick
    assert [v.user_id for v in role_of(done, "qa").approvals] == [BOB]
    deployment = await world.deployment(request)
    assert deployment.state is S.APPROVED
    last = (await world.deployments.events(deployment.id))[-1]
    assert (last.kind, last.actor) == ("deploy.approved", CAROL)
    assert last.data["note"] == f"signed off: qa by {BOB}, security by {CAROL}"
    # Each vote is an event; the request's end is its own.
    assert await world.kinds() == [
        "approval.requested",
        "approval.ticked",
        "approval.approved",
        "approval.ticked",
        "approval.approved",
        "approval.ended",
    ]
    [ended] = await world.audit.events(kind="approval.ended")
    assert ended.data == {
        "deployment": deployment.id,
        "request": request.id,
        "status": "approved",
        "reason": "policy met",
    }
    await assert_presses_dead(world, done)


async def test_refusals_change_nothing(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    qa, security = request.roles
    # Only the required item is named: the optional one never holds anything up.
    await refused(
        world,
        request,
        world.approvals.approve(qa.id, BOB),
        "Tick the required items first: Regression suite green",
    )
    with pytest.raises(ApprovalRefused) as caught:
        await world.approvals.approve(qa.id, ERIN)
    assert "Load test" not in str(caught.value)
    for who in (ALICE, CAROL, DAVE, "bob", ""):  # no qa among them (and no ids at all)
        await refused(
            world, request, world.approvals.approve(qa.id, who), "This needs the role qa."
        )
        await refused(
            world,
            request,
            world.approvals.tick(item_of(request, "regression").id, who, True),
            "This needs the role qa.",
        )
    await refused(
        world, request, world.approvals.approve(security.id, BOB), "This needs the role security."
    )
    # qa is satisfied by bob: erin, also qa, has nothing left to give.
    request = await tick_and_approve(world, request, "qa")
    await refused(
        world, request, world.approvals.approve(qa.id, ERIN), "qa has all the approvals it needs."
    )


async def test_the_requester_never_signs_off_even_holding_the_role(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    request = await world.open(requester=BOB)  # bob holds qa
    qa = role_of(request, "qa")
    # Nor does a tick or a piece of evidence of theirs count for the role.
    await refused(
        world,
        request,
        world.approvals.tick(item_of(request, "regression").id, BOB, True),
        "You asked for this deploy: its checklist and evidence come from someone else.",
    )
    await refused(
        world,
        request,
        world.approvals.add_evidence(request.id, BOB, "text", "all green, trust me", None),
        "You asked for this deploy: its checklist and evidence come from someone else.",
    )
    await refused(  # someone who may not sign for qa cannot tick its list either
        world,
        request,
        world.approvals.tick(item_of(request, "regression").id, DAVE, True),
        "This needs the role qa.",
    )
    await world.approvals.tick(item_of(request, "regression").id, ERIN, True)  # erin: qa
    request = await world.approvals.get(request.id)
    await refused(
        world,
        request,
        world.approvals.approve(qa.id, BOB),
        "You asked for this deployment: someone else approves it.",
    )
    await refused(
        world,
        request,
        world.approvals.start_rejection(qa.id, BOB),
        "It is your own request: /cancel withdraws it.",
    )
    by_erin, _ = await world.approvals.approve(qa.id, ERIN)  # another qa member may
    assert role_of(by_erin, "qa").met


async def test_one_role_per_person(make_world: MakeWorld) -> None:
    # carol holds both security and sre; each needs one person.
    text = variant("roles = { qa = 1, security = 1 }", "roles = { security = 1, sre = 1 }")
    world = make_world(parse_ops_text(text))
    request = await world.open()
    sre = role_of(request, "sre")
    assert sre.items == ()  # sre has no checklist
    request = await tick_and_approve(world, request, "security")
    await refused(
        world,
        request,
        world.approvals.approve(sre.id, CAROL),
        "You approved as security already: one role per person.",
    )
    done, _ = await world.approvals.approve(sre.id, DAVE)
    assert done.status is RequestStatus.APPROVED
    # Where the file allows it, one person may give both.
    world.ops = parse_ops_text(
        text.replace("one_role_per_person = true", "one_role_per_person = false")
    )
    second = await world.open(service="api")
    await tick_and_approve(world, second, "security")
    both, _ = await world.approvals.approve(role_of(second, "sre").id, CAROL)
    assert both.status is RequestStatus.APPROVED


# -- idempotency and forged presses ----------------------------------------------------------


async def test_replayed_presses_change_nothing(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    regression = item_of(request, "regression")
    once, _ = await world.approvals.tick(regression.id, BOB, True)
    events = len(await world.audit.events())
    world.at(5)  # a replay later must not move ticked_at either
    assert await world.approvals.tick(regression.id, ERIN, True) == (once, False)
    assert await world.approvals.tick(item_of(request, "perf").id, BOB, False) == (once, False)
    assert len(await world.audit.events()) == events
    unticked, _ = await world.approvals.tick(regression.id, ERIN, False)
    assert item_of(unticked, "regression").ticked_by is None
    again, _ = await world.approvals.tick(regression.id, ERIN, True)
    assert (item_of(again, "regression").ticked_by, item_of(again, "regression").ticked_at) == (
        ERIN,
        T0 + timedelta(seconds=5),
    )
    assert (await world.kinds())[1:] == ["approval.ticked", "approval.unticked", "approval.ticked"]
    qa = role_of(request, "qa")
    voted, changed = await world.approvals.approve(qa.id, BOB)
    assert changed
    events = len(await world.audit.events())
    assert await world.approvals.approve(qa.id, BOB) == (voted, False)
    assert len(role_of(voted, "qa").votes) == 1
    assert len(await world.audit.events()) == events


@pytest.mark.parametrize("bad", [999_999, 0, -1])
async def test_unknown_ids_are_no_longer_valid(make_world: MakeWorld, bad: int) -> None:
    world = make_world()
    request = await world.open()
    before = await world.snapshot(request)
    presses = [
        world.approvals.tick(bad, BOB, True),
        world.approvals.approve(bad, BOB),
        world.approvals.start_rejection(bad, BOB),
        world.approvals.attach_evidence(bad, BOB),
        world.approvals.add_evidence(bad, BOB, "text", "green", None),
        world.approvals.get(bad),
    ]
    for press in presses:
        with pytest.raises(ButtonNoLongerValid, match="no longer valid"):
            await press
    assert await world.snapshot(request) == before


async def test_a_press_only_ever_changes_its_own_request(make_world: MakeWorld) -> None:
    world = make_world()
    first = await world.open()
    production = deploy_policy(world.ops, "production")
    assert production is not None
    # The second asks security alone; ids are global, so its rows get ids of their own.
    second = await world.open(service="api", policy=Policy(production.roles[1:]))
    assert [r.role for r in second.roles] == ["security"]
    first_scan, second_scan = item_of(first, "scan"), item_of(second, "scan")
    assert second_scan.id not in {i.id for r in first.roles for i in r.items}
    assert role_of(second, "security").id not in {r.id for r in first.roles}
    untouched = await world.snapshot(first)
    # bob (qa only) pressing the second's buttons: refused, neither request moves.
    await refused(
        world,
        second,
        world.approvals.tick(second_scan.id, BOB, True),
        "This needs the role security.",
    )
    await refused(
        world,
        second,
        world.approvals.approve(role_of(second, "security").id, BOB),
        "This needs the role security.",
    )
    # carol's presses on the second's ids (say, forged onto the first's message) act on the
    # second alone: its item is ticked and it is signed off, the first's scan stays unticked.
    ticked, _ = await world.approvals.tick(second_scan.id, CAROL, True)
    assert ticked.id == second.id and item_of(ticked, "scan").ticked_by == CAROL
    done, _ = await world.approvals.approve(role_of(second, "security").id, CAROL)
    assert done.id == second.id and done.status is RequestStatus.APPROVED
    assert (await world.deployment(second)).state is S.APPROVED
    current, deployment, _ = await world.snapshot(first)
    assert (current, deployment) == untouched[:2]
    assert item_of(current, "scan").ticked_by is None
    # And the first's buttons still act on the first alone.
    on_first, _ = await world.approvals.tick(first_scan.id, CAROL, True)
    assert on_first.id == first.id and item_of(on_first, "scan").ticked_by == CAROL
    assert await world.approvals.get(second.id) == done


async def test_ticks_freeze_once_the_role_approved(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    request = await tick_and_approve(world, request, "qa")
    for key, state in (("perf", True), ("regression", False)):
        for who in (BOB, ERIN):
            await refused(
                world,
                request,
                world.approvals.tick(item_of(request, key).id, who, state),
                "qa has approved already: its list is closed.",
            )
    # security's list is its own, still open.
    ticked, _ = await world.approvals.tick(item_of(request, "scan").id, CAROL, True)
    assert item_of(ticked, "scan").ticked_by == CAROL


async def test_concurrent_presses_count_once(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    qa, security = request.roles
    for key, who in (("regression", BOB), ("scan", CAROL)):
        await world.approvals.tick(item_of(request, key).id, who, True)
    # Two qa members at once for one place: one vote, the other told why.
    results = await asyncio.gather(
        world.approvals.approve(qa.id, BOB),
        world.approvals.approve(qa.id, ERIN),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["ApprovalRefused", "tuple"]
    # The same last press twice at once: one ends the request, the other finds it over.
    results = await asyncio.gather(
        world.approvals.approve(security.id, CAROL),
        world.approvals.approve(security.id, CAROL),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["ButtonNoLongerValid", "tuple"]
    done = await world.approvals.get(request.id)
    assert done.status is RequestStatus.APPROVED
    assert [len(r.votes) for r in done.roles] == [1, 1]
    approved = [e for e in await world.deployments.events(done.deployment_id)]
    assert [e.kind for e in approved].count("deploy.approved") == 1


# -- rejection -------------------------------------------------------------------------------


async def test_rejection_by_reply_cancels_the_deployment(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    qa = role_of(request, "qa")
    role = await world.approvals.start_rejection(qa.id, BOB)
    assert (role.id, role.role) == (qa.id, "qa")
    await refused(
        world, request, world.approvals.start_rejection(qa.id, CAROL), "This needs the role qa."
    )
    await world.approvals.add_rejection_prompt(qa.id, BOB, -100, 50)
    before = await world.snapshot(request)
    # Someone else's reply to the prompt, or a reply to another message: not a rejection.
    assert await world.approvals.reject_by_reply(-100, 50, ERIN, "looks bad") is None
    assert await world.approvals.reject_by_reply(-100, 51, BOB, "looks bad") is None
    assert await world.approvals.reject_by_reply(-200, 50, BOB, "looks bad") is None
    assert await world.snapshot(request) == before
    for blank in ("", "   \n\t"):
        await refused(
            world,
            request,
            world.approvals.reject_by_reply(-100, 50, BOB, blank),
            "A rejection needs a reason",
        )
    world.at(40)
    rejected = await world.approvals.reject_by_reply(-100, 50, BOB, " flaky  tests\non checkout ")
    assert rejected is not None
    reason = "flaky tests on checkout"
    assert (rejected.status, rejected.reason, rejected.ended_by) == (
        RequestStatus.REJECTED,
        reason,
        BOB,
    )
    assert [(v.user_id, v.decision, v.reason) for v in role_of(rejected, "qa").votes] == [
        (BOB, "reject", reason)
    ]
    deployment = await world.deployment(request)
    assert (deployment.state, deployment.finished) == (S.CANCELLED, True)
    last = (await world.deployments.events(deployment.id))[-1]
    assert (last.kind, last.actor, last.data["note"]) == (
        "deploy.cancelled",
        BOB,
        f"rejected: {reason}",
    )
    [vote] = await world.audit.events(kind="approval.rejected")
    [end] = await world.audit.events(kind="approval.ended")
    assert (vote.actor, vote.data["role"], vote.data["reason"]) == (BOB, "qa", reason)
    assert (end.actor, end.data["status"], end.data["reason"]) == (BOB, "rejected", reason)
    # A second reply to the same prompt finds the request over.
    with pytest.raises(ButtonNoLongerValid):
        await world.approvals.reject_by_reply(-100, 50, BOB, "again")
    await assert_presses_dead(world, rejected)


async def test_a_blank_reply_to_no_prompt_is_not_a_rejection(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    await world.approvals.set_message(request.id, -100, 42)
    # The chat handler asks reject_by_reply first for every reply, photos without text too.
    assert await world.approvals.reject_by_reply(-100, 42, BOB, "") is None


# -- evidence --------------------------------------------------------------------------------


async def test_evidence_goes_to_the_presser_s_own_open_items(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    evidence_id, choices = await world.approvals.add_evidence(
        request.id, BOB, "link", "https://ci.example/run/7", None
    )
    assert [(c.role, c.item_text) for c in choices] == [
        ("qa", "Regression suite green"),
        ("qa", "Load test"),
    ]
    _, carol_choices = await world.approvals.add_evidence(
        request.id, CAROL, "text", "scan: 0 findings", None
    )
    assert [(c.role, c.item_text) for c in carol_choices] == [("security", "Dependency scan clean")]
    for outsider in (ALICE, DAVE, "nobody"):  # no role this request asks for
        await refused(
            world,
            request,
            world.approvals.add_evidence(request.id, outsider, "text", "trust me", None),
            "None of your roles has an open checklist here.",
        )
    regression, perf = choices
    # Only the one who sent it files it: another qa member's press is not valid.
    await refused(
        world,
        request,
        world.approvals.attach_evidence(regression.id, ERIN),
        "no longer valid",
        ButtonNoLongerValid,
    )
    attached, changed = await world.approvals.attach_evidence(regression.id, BOB)
    assert changed
    [evidence] = item_of(attached, "regression").evidence
    assert (evidence.id, evidence.user_id, evidence.kind, evidence.content, evidence.at) == (
        evidence_id,
        BOB,
        "link",
        "https://ci.example/run/7",
        T0,
    )
    assert attached.evidence == (evidence,)
    assert await world.kinds() == ["approval.requested", "approval.evidence"]
    assert await world.approvals.attach_evidence(regression.id, BOB) == (attached, False)
    assert await world.kinds() == ["approval.requested", "approval.evidence"]
    # Filed already: its other choice is spent.
    await refused(
        world,
        attached,
        world.approvals.attach_evidence(perf.id, BOB),
        "no longer valid",
        ButtonNoLongerValid,
    )
    # Once qa approved, its items are no longer offered to anyone of qa.
    request = await tick_and_approve(world, attached, "qa")
    for who in (BOB, ERIN):
        await refused(
            world,
            request,
            world.approvals.add_evidence(request.id, who, "text", "late", None),
            "None of your roles has an open checklist here.",
        )
    _, still = await world.approvals.add_evidence(request.id, CAROL, "text", "report", None)
    assert [c.role for c in still] == ["security"]
    scan, _ = await world.approvals.attach_evidence(still[0].id, CAROL)
    assert [e.content for e in scan.evidence] == ["https://ci.example/run/7", "report"]
    await tick_and_approve(world, scan, "security")
    await refused(
        world,
        request,
        world.approvals.add_evidence(request.id, CAROL, "text", "after", None),
        "This sign-off has ended; evidence is closed.",
    )


async def test_evidence_text_is_capped(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    _, [choice, _] = await world.approvals.add_evidence(request.id, BOB, "text", "y" * 1500, None)
    attached, _ = await world.approvals.attach_evidence(choice.id, BOB)
    assert [e.content for e in attached.evidence] == ["y" * 1000]


# -- timers ----------------------------------------------------------------------------------


async def test_reminder_escalation_and_expiry_each_once(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    world.at(59)
    assert await world.approvals.due() == []
    world.at(60)
    [remind] = await world.approvals.due()
    assert (remind.kind, remind.request.id, remind.request.reminded) == ("remind", request.id, True)
    world.at(61)
    assert await world.approvals.due() == []  # taken once
    world.at(120)
    [escalate] = await world.approvals.due()
    assert (escalate.kind, escalate.request.escalated) == ("escalate", True)
    world.at(299)
    assert await world.approvals.due() == []
    world.at(300)
    [expire] = await world.approvals.due()
    assert (expire.kind, expire.request.status, expire.request.ended_by) == (
        "expire",
        RequestStatus.EXPIRED,
        "opsgate",
    )
    deployment = await world.deployment(request)
    assert (deployment.state, deployment.finished) == (S.CANCELLED, True)
    last = (await world.deployments.events(deployment.id))[-1]
    assert (last.kind, last.data["note"]) == ("deploy.cancelled", "sign-off expired")
    assert await world.kinds() == [
        "approval.requested",
        "approval.remind",
        "approval.escalate",
        "approval.ended",
    ]
    world.at(10_000)
    assert await world.approvals.due() == []
    await assert_presses_dead(world, expire.request)


async def test_a_late_clock_only_expires(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    signed = await world.open(service="api")
    await tick_and_approve(world, signed, "qa")
    await tick_and_approve(world, signed, "security")
    world.at(301)
    # Straight past every deadline: no reminder or escalation for a request that is over.
    assert [(a.kind, a.request.id) for a in await world.approvals.due()] == [("expire", request.id)]
    assert await world.approvals.due() == []
    assert "approval.remind" not in await world.kinds()
    assert (await world.deployment(signed)).state is S.APPROVED  # signed off: not expired


# -- rollback, cancel, lookups ---------------------------------------------------------------


async def test_rollback_needs_one_person_of_any_rollback_role(make_world: MakeWorld) -> None:
    world = make_world()
    policy = rollback_policy(world.ops, "production")
    assert policy is not None
    request = await world.open(policy=policy, kind=DeploymentKind.ROLLBACK)
    assert request.any_role and [r.role for r in request.roles] == ["oncall"]
    oncall = role_of(request, "oncall")
    await refused(
        world, request, world.approvals.approve(oncall.id, BOB), "This needs the role oncall."
    )
    done, _ = await world.approvals.approve(oncall.id, DAVE)
    assert done.status is RequestStatus.APPROVED
    assert (await world.deployment(request)).state is S.APPROVED
    # With two rollback roles, either one alone is enough.
    world.ops = parse_ops_text(
        variant('rollback_roles = ["oncall"]', 'rollback_roles = ["oncall", "security"]')
    )
    policy = rollback_policy(world.ops, "production")
    assert policy is not None
    second = await world.open(service="api", policy=policy, kind=DeploymentKind.ROLLBACK)
    either, _ = await world.approvals.approve(role_of(second, "security").id, CAROL)
    assert either.status is RequestStatus.APPROVED and not role_of(either, "oncall").met


async def test_cancel_for_ends_only_an_open_request(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    world.at(10)
    await world.approvals.cancel_for(request.deployment_id, ALICE, "withdrawn")
    cancelled = await world.approvals.get(request.id)
    assert (cancelled.status, cancelled.ended_by, cancelled.reason, cancelled.ended_at) == (
        RequestStatus.CANCELLED,
        ALICE,
        "withdrawn",
        T0 + timedelta(seconds=10),
    )
    assert await world.kinds() == ["approval.requested", "approval.ended"]
    # The deployment is the caller's to cancel: only the request ended here.
    assert (await world.deployment(request)).state is S.AWAITING_APPROVAL
    await world.approvals.cancel_for(request.deployment_id, BOB, "again")
    await world.approvals.cancel_for(999_999, BOB, "no such deployment")
    assert await world.snapshot(request) == (
        cancelled,
        await world.deployment(request),
        len(await world.audit.events()),
    )
    assert await world.kinds() == ["approval.requested", "approval.ended"]
    await assert_presses_dead(world, cancelled)
    signed = await world.open(service="api")
    await tick_and_approve(world, signed, "qa")
    signed = await tick_and_approve(world, signed, "security")
    await world.approvals.cancel_for(signed.deployment_id, ALICE, "too late")
    assert await world.approvals.get(signed.id) == signed  # approved stays approved


async def test_open_requests_and_lookups(make_world: MakeWorld) -> None:
    world = make_world()
    first = await world.open()
    second = await world.open(service="api")
    assert [r.id for r in await world.approvals.open_requests()] == [first.id, second.id]
    await tick_and_approve(world, first, "qa")
    await tick_and_approve(world, first, "security")
    assert [r.id for r in await world.approvals.open_requests()] == [second.id]
    assert await world.approvals.by_message(-100, 42) is None
    await world.approvals.set_message(second.id, -100, 42)
    found = await world.approvals.by_message(-100, 42)
    assert found is not None and found.id == second.id
    assert (found.chat_id, found.message_id) == (-100, 42)
    assert await world.approvals.by_message(-100, 43) is None
    assert await world.approvals.by_message(-101, 42) is None
    assert await world.approvals.for_deployment(second.deployment_id) == found
    assert await world.approvals.for_deployment(999_999) is None


async def test_filing_evidence_is_checked_again_when_pressed(make_world: MakeWorld) -> None:
    world = make_world()
    request = await world.open()
    _, choices = await world.approvals.add_evidence(request.id, BOB, "text", "green", None)
    _, perf = choices
    # qa approves (bob ticked nothing; erin does it), closing qa's list: filing is refused.
    await world.approvals.tick(item_of(request, "regression").id, ERIN, True)
    await world.approvals.approve(role_of(request, "qa").id, ERIN)
    await refused(
        world,
        request,
        world.approvals.attach_evidence(perf.id, BOB),
        "qa has approved already: its list is closed.",
    )
    # Someone taken out of the role in the ops file since cannot file theirs either.
    other = await world.open(service="api")
    _, [first, _] = await world.approvals.add_evidence(other.id, BOB, "text", "green", None)
    world.ops = parse_ops_text(OPS_TEXT.replace("qa = [2, 5]", "qa = [5]"))
    await refused(
        world, other, world.approvals.attach_evidence(first.id, BOB), "This needs the role qa."
    )


async def test_a_deployment_ended_elsewhere_ends_its_buttons_and_timers(
    make_world: MakeWorld,
) -> None:
    world = make_world()
    request = await world.open()
    await world.deployments.cancel(request.deployment_id, CAROL, "cancelled from chat")
    for press in (
        world.approvals.tick(item_of(request, "regression").id, BOB, True),
        world.approvals.approve(role_of(request, "security").id, CAROL),
    ):
        with pytest.raises(ButtonNoLongerValid):
            await press
    # The expiry finds the deployment over: the request ends as cancelled, nothing is due.
    world.at(10_000)
    assert await world.approvals.due() == []
    ended = await world.approvals.get(request.id)
    assert (ended.status, ended.reason) == (RequestStatus.CANCELLED, "deploy ended")
