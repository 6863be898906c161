"""Deploy hooks: the team's own commands around a deploy and a rollback.

Each hook is an argv list from the ops file (`services.NAME.deploy.hooks`), run on the service's
host through its host runner, in a release directory, with the deployment's context in its
environment. Each one is a Progress step ("hook pre_deploy: announce") whose detail keeps the
tail of its output. What a failure means is the pipeline's choice (see services/deploy/pipeline.py):
`run_hooks` either stops at the first failure (`HookFailed`) or reports it and goes on.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from config.inventory import DeployConfig
from services.control.units import tail_lines
from services.deploy.errors import StepFailed
from services.hosts.runner import CommandResult, Host
from services.progress import Progress, StepStatus

HookPhase = Literal[
    "pre_deploy", "post_deploy", "pre_rollback", "post_rollback", "migrate", "smoke"
]
# `migrate` and `smoke` are steps of the deploy itself (DeployConfig.migrate, .smoke), run and
# reported the same way as hooks.
_LABELS = {"migrate": "migration", "smoke": "smoke check"}
TAIL_LINES = 10
TAIL_CHARS = 1000


class HookFailed(StepFailed):
    """A hook exited non-zero, timed out or could not be started; `str()` fits a chat."""

    def __init__(self, message: str, results: Sequence[HookResult]) -> None:
        super().__init__(message)
        self.results = list(results)


@dataclass(frozen=True)
class HookContext:
    """What a hook learns about the deployment, as OPSGATE_* environment variables."""

    service: str
    version: str
    previous_version: str | None
    deployment_id: int
    environment: str
    requester: str
    kind: Literal["deploy", "rollback"]

    def env(self) -> dict[str, str]:
        return {
            "OPSGATE_SERVICE": self.service,
            "OPSGATE_VERSION": self.version,
            "OPSGATE_PREVIOUS_VERSION": self.previous_version or "",
            "OPSGATE_DEPLOYMENT_ID": str(self.deployment_id),
            "OPSGATE_ENVIRONMENT": self.environment,
            "OPSGATE_REQUESTER": self.requester,
            "OPSGATE_KIND": self.kind,
        }


@dataclass(frozen=True)
class HookResult:
    phase: HookPhase
    name: str
    result: CommandResult

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def tail(self) -> str:
        return output_tail(self.result)

    def describe(self) -> str:
        """One sentence for a chat, with the tail when it failed."""
        if self.ok:
            return f"The {label(self.phase)} {self.name} succeeded."
        text = f"The {label(self.phase)} {self.name} failed ({self.result.summary})."
        return f"{text} Output: {self.tail}" if self.tail else text


def hook_name(argv: Sequence[str]) -> str:
    """What a step calls a hook: the program's base name."""
    return posixpath.basename(argv[0]) or argv[0]


def output_tail(result: CommandResult, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last lines of stdout and stderr together (stderr last: it usually says why)."""
    text = "\n".join(s.rstrip("\n") for s in (result.stdout, result.stderr) if s.strip())
    return tail_lines(text, lines)[-chars:]


def label(phase: HookPhase) -> str:
    """How a chat names one command of the phase: "pre_deploy hook", "migration"."""
    return _LABELS.get(phase, f"{phase} hook")


def hooks_of(deploy: DeployConfig, phase: HookPhase) -> list[list[str]]:
    source = deploy if phase in _LABELS else deploy.hooks
    argvs: list[list[str]] = getattr(source, phase)
    return argvs


async def run_hooks(
    host: Host,
    deploy: DeployConfig,
    phase: HookPhase,
    context: HookContext,
    cwd: str,
    progress: Progress,
    *,
    stop_on_failure: bool = True,
) -> list[HookResult]:
    """Run the phase's hooks in order, one Progress step each.

    stop_on_failure: raise `HookFailed` at the first failing hook (the later ones do not run);
    otherwise mark its step failed, go on with the next, and return every result."""
    results: list[HookResult] = []
    env = context.env()
    timeout = deploy.build_timeout_s if phase == "migrate" else deploy.hooks.hook_timeout_s
    for argv in hooks_of(deploy, phase):
        name = hook_name(argv)
        title = f"{label(phase)}: {name}" if phase in _LABELS else f"hook {phase}: {name}"
        async with progress.step(title) as step:
            try:
                result = await host.run(argv, timeout=timeout, env=env, cwd=cwd)
            except ValueError as exc:  # an argv or env the host runner refuses
                failure = f"The {label(phase)} {name} could not run: {exc}"
                step.detail = str(exc)
            else:
                outcome = HookResult(phase, name, result)
                results.append(outcome)
                if outcome.ok:
                    step.detail = outcome.tail
                    continue
                failure = outcome.describe()
                step.detail = f"{result.summary}\n{outcome.tail}".strip()
            if stop_on_failure:
                raise HookFailed(failure, results)
            step.status = StepStatus.FAILED
    return results
