"""The one base of the errors services raise for a person to read.

Each capability package has its own base under it; `str()` of any of them is one sentence
fit for a chat reply or an API error, so a surface catches `OpsgateError` once and shows it.

    OpsgateError
     +-- HostCommandFailed, UnknownHostError, HostFactError    services/hosts
     +-- ServiceControlError, UnknownService, ProxyReloadFailed services/control
     +-- ReleaseError (InvalidVersion, BuildFailed, ...)        services/releases
     +-- DeployError (StepFailed, DeploymentError, EnvLockError, RollbackPointError, ...)
     |                                                          services/deploy
     +-- ApprovalError                                          services/approvals
     +-- AlertError (PayloadError, MatcherError, ...)           services/alerts
     +-- FlagError (PlanError, FlagdExportError, ...)           services/flags
     +-- StorageError                                           services/records

`kind` says what sort of refusal it is, so the HTTP side maps errors to status codes in one
place: "invalid" (422), "not_found" (404), "conflict" (409), "unavailable" (503).
"""

from __future__ import annotations


class OpsgateError(Exception):
    """An error with a sentence for a person; `kind` classifies it for HTTP."""

    kind = "conflict"
