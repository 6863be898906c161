from collections.abc import Sequence

import pytest

from services.progress import Progress, Step, StepStatus


async def test_steps_are_reported_as_they_change() -> None:
    seen: list[list[tuple[str, StepStatus]]] = []

    async def listener(steps: Sequence[Step]) -> None:
        seen.append([(s.title, s.status) for s in steps])

    progress = Progress(listener)
    async with progress.step("restart"):
        pass
    with pytest.raises(RuntimeError, match="boom"):
        async with progress.step("health"):
            raise RuntimeError("boom")
    assert seen == [
        [("restart", StepStatus.RUNNING)],
        [("restart", StepStatus.OK)],
        [("restart", StepStatus.OK), ("health", StepStatus.RUNNING)],
        [("restart", StepStatus.OK), ("health", StepStatus.FAILED)],
    ]
    assert progress.failed
    assert progress.steps[1].detail == "boom"


async def test_a_step_may_mark_itself_failed_without_raising() -> None:
    progress = Progress()
    async with progress.step("health") as step:
        step.status = StepStatus.FAILED
        step.detail = "HTTP 500"
    assert progress.failed and progress.steps[0].detail == "HTTP 500"
