"""A small client for Alertmanager's API v2: what is firing, by label matchers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
