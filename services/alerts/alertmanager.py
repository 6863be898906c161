"""A small client for Alertmanager's API v2: what is firing, by label matchers; silences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from services.alerts.model import AlertError


class AlertmanagerUnavailable(AlertError):
    """Alertmanager could not be asked (down, refused, or an answer we cannot read)."""

    kind = "unavailable"


@dataclass(frozen=True)
class FiringAlert:
    name: str
    labels: Mapping[str, str]
    summary: str


def _matcher(label: str, value: str) -> str:
    """`label="value"` in Alertmanager's matcher syntax, the value's \\ and " escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{label}="{escaped}"'


class AlertmanagerClient:
    def __init__(self, http: httpx.AsyncClient, url: str, timeout_s: float = 5.0) -> None:
        self._http = http
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s

    async def firing(self, labels: Mapping[str, str]) -> list[FiringAlert]:
        """Active alerts (not silenced, not inhibited) whose labels equal all of `labels`."""
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("active", "true"),
            ("silenced", "false"),
            ("inhibited", "false"),
        ]
        params += [("filter", _matcher(k, v)) for k, v in sorted(labels.items())]
        try:
            response = await self._http.get(
                f"{self._url}/api/v2/alerts", params=params, timeout=self._timeout_s
            )
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise AlertmanagerUnavailable(f"cannot ask Alertmanager at {self._url}: {exc}") from exc
        if not isinstance(body, list):
            raise AlertmanagerUnavailable("Alertmanager answered something that is not a list")
        return [
            FiringAlert(
                name=str(alert.get("labels", {}).get("alertname", "?")),
                labels=dict(alert.get("labels", {})),
                summary=str(alert.get("annotations", {}).get("summary", "")),
            )
            for alert in body
            if isinstance(alert, dict)
        ]


@dataclass(frozen=True)
class AmMatcher:
    name: str
    value: str
    regex: bool = False
    equal: bool = True

    def __str__(self) -> str:
        op = ("=~" if self.regex else "=") if self.equal else ("!~" if self.regex else "!=")
        return f"{self.name}{op}{self.value}"


@dataclass(frozen=True)
class AmSilence:
    """A silence as Alertmanager holds it (made by opsgate, amtool, the UI, anyone)."""

    id: str
    matchers: tuple[AmMatcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    state: str  # active | pending | expired


def _time(text: object) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def _silence(body: Mapping[str, Any]) -> AmSilence:
    matchers = tuple(
        AmMatcher(
            str(m["name"]),
            str(m["value"]),
            bool(m.get("isRegex", False)),
            bool(m.get("isEqual", True)),
        )
        for m in body.get("matchers", [])
    )
    return AmSilence(
        id=str(body["id"]),
        matchers=matchers,
        starts_at=_time(body["startsAt"]),
        ends_at=_time(body["endsAt"]),
        created_by=str(body.get("createdBy", "")),
        comment=str(body.get("comment", "")),
        state=str(body.get("status", {}).get("state", "")),
    )


class AlertmanagerSilences(AlertmanagerClient):
    """Silences through API v2: list, create, expire. Any failure to talk is Unavailable;
    Alertmanager refusing what we sent (a 400) is a SilenceRefused."""

    async def _call(self, method: str, path: str, body: object = None) -> httpx.Response:
        try:
            response = await self._http.request(
                method, f"{self._url}{path}", json=body, timeout=self._timeout_s
            )
        except httpx.HTTPError as exc:
            raise AlertmanagerUnavailable(
                f"cannot reach Alertmanager at {self._url}: {exc}"
            ) from exc
        if response.status_code == 400:
            raise SilenceRefused(f"Alertmanager refused it: {response.text[:200]}")
        if response.status_code >= 500:
            raise AlertmanagerUnavailable(f"Alertmanager answered {response.status_code}")
        return response

    async def silences(self) -> list[AmSilence]:
        response = await self._call("GET", "/api/v2/silences")
        try:
            body = response.json()
            return [_silence(s) for s in body if isinstance(s, dict)]
        except (ValueError, KeyError, TypeError) as exc:
            raise AlertmanagerUnavailable(f"unreadable silences from Alertmanager: {exc}") from exc

    async def create(
        self,
        matchers: Sequence[AmMatcher],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        """The new silence's id."""
        body = {
            "matchers": [
                {"name": m.name, "value": m.value, "isRegex": m.regex, "isEqual": m.equal}
                for m in matchers
            ],
            "startsAt": starts_at.isoformat(),
            "endsAt": ends_at.isoformat(),
            "createdBy": created_by,
            "comment": comment,
        }
        response = await self._call("POST", "/api/v2/silences", body)
        try:
            response.raise_for_status()
            return str(response.json()["silenceID"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise AlertmanagerUnavailable(f"unexpected answer from Alertmanager: {exc}") from exc

    async def expire(self, silence_id: str) -> bool:
        """True when it was expired now; False when Alertmanager knows no such silence."""
        response = await self._call("DELETE", f"/api/v2/silence/{silence_id}")
        if response.status_code == 404:
            return False
        if response.is_error:
            raise AlertmanagerUnavailable(f"Alertmanager answered {response.status_code}")
        return True


class SilenceRefused(AlertError):
    """Alertmanager read the silence and refused it (a bad matcher, say)."""

    kind = "invalid"
