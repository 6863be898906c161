"""The error tree: every error services raise for a person derives from OpsgateError, and its
`kind` maps to one HTTP status on the API."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import services
from bot.http.api.common import STATUS_OF_KIND
from services.alerts.outbox import DeliveryFailed, RetryLater
from services.control.controller import UnknownService
from services.deploy.front_door import NotDeployable, OutsideWindow
from services.deploy.model import Busy
from services.errors import OpsgateError
from services.hosts.primitives import HostCommandFailed
from services.releases.build import InvalidVersion
from services.releases.queries import NoRollbackTarget

# Not for people: the outbox's own signals between a notifier and its retry loop.
CONTROL_FLOW = {RetryLater, DeliveryFailed}


def service_exceptions() -> list[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for module in pkgutil.walk_packages(services.__path__, "services."):
        loaded = importlib.import_module(module.name)
        for _, value in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.name:
                found.add(value)
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__name__}")


def test_every_service_error_has_the_one_base() -> None:
    errors = service_exceptions()
    assert len(errors) > 40  # the walk really found the tree
    strays = [
        f"{cls.__module__}.{cls.__name__}"
        for cls in errors
        if cls not in CONTROL_FLOW and not issubclass(cls, OpsgateError)
    ]
    assert strays == []


def test_every_kind_has_a_status() -> None:
    kinds = {cls.kind for cls in service_exceptions() if issubclass(cls, OpsgateError)}
    assert kinds <= set(STATUS_OF_KIND), kinds - set(STATUS_OF_KIND)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidVersion("../x", "it contains '..'"), 422),
        (NotDeployable("web"), 422),
        (NoRollbackTarget("web has no earlier good release"), 422),
        (UnknownService("nope", ["web"]), 404),
        (OutsideWindow("production is frozen"), 409),
        (HostCommandFailed.__new__(HostCommandFailed), 503),
    ],
)
def test_kinds_map_to_the_status_the_api_answers(error: OpsgateError, status: int) -> None:
    assert STATUS_OF_KIND[error.kind] == status


def test_a_busy_service_is_a_conflict() -> None:
    assert STATUS_OF_KIND[Busy.kind] == 409
