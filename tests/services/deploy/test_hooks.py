"""Deploy hooks: their config shape, and run_hooks on the local host (env, cwd, tails)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.inventory import DeployConfig, DeployHooks
from services.deploy.hooks import HookContext, HookFailed, hook_name, run_hooks
from services.hosts.runner import LocalHost
from services.progress import Progress, StepStatus

CONTEXT = HookContext("app", "v2", None, 7, "staging", "1001", "deploy")


def test_hooks_default_to_none_and_take_argv_lists() -> None:
    deploy = DeployConfig(root="/srv/app", git="/repo")
    assert deploy.hooks == DeployHooks()
    assert deploy.hooks.pre_deploy == [] and deploy.hooks.hook_timeout_s == 120
    hooks = DeployHooks(pre_deploy=[["/usr/local/bin/announce", "start"]], hook_timeout_s=5)
    assert hooks.pre_deploy == [["/usr/local/bin/announce", "start"]]


@pytest.mark.parametrize(
    "bad",
    [
        {"pre_deploy": [[]]},  # an empty argv
        {"post_deploy": [["true", ""]]},  # an empty argument
        {"pre_rollback": ["true"]},  # a string, not an argv list
        {"post_rollback": [["true"]], "shell": "x"},  # unknown key
        {"hook_timeout_s": 0},
    ],
)
def test_bad_hooks_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DeployHooks.model_validate(bad)


def test_context_env_has_an_empty_previous_version() -> None:
    env = CONTEXT.env()
    assert env["OPSGATE_PREVIOUS_VERSION"] == "" and env["OPSGATE_DEPLOYMENT_ID"] == "7"
    assert env["OPSGATE_KIND"] == "deploy" and env["OPSGATE_REQUESTER"] == "1001"


async def test_hooks_run_in_order_in_cwd_with_the_context(tmp_path: Path) -> None:
    code = "import os; print(os.getcwd()); print(os.environ['OPSGATE_VERSION'])"
    hooks = DeployConfig(
        root="/srv/app",
        git="/repo",
        hooks=DeployHooks(pre_deploy=[["touch", "first"], [sys.executable, "-c", code]]),
    )
    progress = Progress()
    results = await run_hooks(LocalHost(), hooks, "pre_deploy", CONTEXT, str(tmp_path), progress)
    assert [r.ok for r in results] == [True, True]
    assert (tmp_path / "first").exists()
    assert [s.title for s in progress.steps] == [
        "hook pre_deploy: touch",
        f"hook pre_deploy: {hook_name([sys.executable])}",
    ]
    assert progress.steps[1].detail == f"{tmp_path}\nv2"


async def test_a_failing_hook_stops_or_is_reported(tmp_path: Path) -> None:
    code = "import sys; print('\\n'.join(map(str, range(30)))); sys.exit('broken')"
    hooks = DeployConfig(
        root="/srv/app",
        git="/repo",
        hooks=DeployHooks(post_deploy=[[sys.executable, "-c", code], ["touch", "after"]]),
    )
    progress = Progress()
    with pytest.raises(HookFailed) as failed:
        await run_hooks(LocalHost(), hooks, "post_deploy", CONTEXT, str(tmp_path), progress)
    assert "failed (exit status 1" in str(failed.value) and str(failed.value).endswith("broken")
    assert "\n0\n" not in str(failed.value)  # only the tail
    assert not (tmp_path / "after").exists()
    assert [s.status for s in progress.steps] == [StepStatus.FAILED]

    progress = Progress()
    results = await run_hooks(
        LocalHost(), hooks, "post_deploy", CONTEXT, str(tmp_path), progress, stop_on_failure=False
    )
    assert [r.ok for r in results] == [False, True] and (tmp_path / "after").exists()
    assert [s.status for s in progress.steps] == [StepStatus.FAILED, StepStatus.OK]
    assert progress.steps[0].detail.endswith("29\nbroken")


async def test_a_slow_hook_times_out(tmp_path: Path) -> None:
    hooks = DeployConfig(
        root="/srv/app",
        git="/repo",
        hooks=DeployHooks(pre_rollback=[["sleep", "5"]], hook_timeout_s=0.2),
    )
    with pytest.raises(HookFailed, match="timed out"):
        await run_hooks(LocalHost(), hooks, "pre_rollback", CONTEXT, str(tmp_path), Progress())


async def test_migrate_and_smoke_run_like_hooks_with_their_own_names(tmp_path: Path) -> None:
    deploy = DeployConfig(
        root="/srv/app",
        git="/repo",
        migrate=[["touch", "migrated"]],
        smoke=[[sys.executable, "-c", "import sys; sys.exit('no orders page')"]],
    )
    progress = Progress()
    results = await run_hooks(LocalHost(), deploy, "migrate", CONTEXT, str(tmp_path), progress)
    assert [r.ok for r in results] == [True] and (tmp_path / "migrated").exists()
    assert progress.steps[0].title == "migration: touch"
    with pytest.raises(HookFailed) as failed:
        await run_hooks(LocalHost(), deploy, "smoke", CONTEXT, str(tmp_path), progress)
    assert str(failed.value).startswith(f"The smoke check {hook_name([sys.executable])} failed")
    assert str(failed.value).endswith("no orders page")
