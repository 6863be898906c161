"""Errors of the deploy capability; each `str()` is one sentence fit for a chat reply."""

from __future__ import annotations

from services.control.units import PermissionDenied, StartLimitHit
from services.errors import OpsgateError
from services.hosts.primitives import HostCommandFailed
from services.hosts.registry import UnknownHostError


class DeployError(OpsgateError):
    """Base of the deploy capability's errors."""


class StepFailed(DeployError):
    """A pipeline step found the service or host not as it must be; `str()` fits a chat."""


class NotTheReleasesFault(StepFailed):
    """A failure after the switch that says nothing about the release (an abort, a proxy that
    would not reload): the pipeline rolls back but does not mark the release bad."""


# Failures of the host or of the service manager, not of the release: a rollback they
# cause never marks the release bad.
NOT_THE_RELEASE: tuple[type[BaseException], ...] = (
    NotTheReleasesFault,
    HostCommandFailed,
    UnknownHostError,
    PermissionDenied,
    StartLimitHit,
)


def is_the_releases_fault(exc: BaseException) -> bool:
    return not isinstance(exc, NOT_THE_RELEASE)
