"""Errors of the deploy capability; each `str()` is one sentence fit for a chat reply."""

from __future__ import annotations

from services.errors import OpsgateError


class DeployError(OpsgateError):
    """Base of the deploy capability's errors."""


class StepFailed(DeployError):
    """A pipeline step found the service or host not as it must be; `str()` fits a chat."""


class NotTheReleasesFault(StepFailed):
    """A failure after the switch that says nothing about the release (an abort, a proxy that
    would not reload): the pipeline rolls back but does not mark the release bad."""
