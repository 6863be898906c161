"""Button routes: which handler answers a callback namespace, and which role a press needs.

Like commands, a button's role is declared once here and enforced by the access gate, so an
old or forwarded message cannot be used to bypass it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from config.permissions import Action
from handlers.commands import CommandCallback

NO_LONGER_VALID = "This button is no longer valid."


@dataclass(frozen=True)
class ButtonRoute:
    namespace: str
    callback: CommandCallback
    action: Action | None = None  # the role it needs comes from the ops file's [permissions]


class ButtonRegistry:
    def __init__(self, routes: Iterable[ButtonRoute]) -> None:
        self._routes: dict[str, ButtonRoute] = {}
        for route in routes:
            if route.namespace in self._routes:
                raise ValueError(f"button namespace {route.namespace!r} registered twice")
            self._routes[route.namespace] = route

    def all(self) -> list[ButtonRoute]:
        return list(self._routes.values())

    def get(self, namespace: str) -> ButtonRoute | None:
        return self._routes.get(namespace)
