"""A canary rollout's error ratio and p95 latency, canary against stable, one point per
analysis: a small PNG drawn pixel by pixel and encoded with zlib. (The /report chart, with
dates, labels and a legend, is drawn with matplotlib in deploys_chart.)
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from services.deploy.canary_rows import AnalysisRow

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
AXIS: Color = (90, 90, 90)
GRID: Color = (230, 230, 230)
MARGIN = 20


STABLE: Color = (40, 100, 200)
CANARY: Color = (230, 120, 20)
PANEL, POINT_WIDTH = 110, 6


@dataclass(frozen=True)
class CanaryPoint:
    """One analysis: each side's error ratio and p95 (None where it had no traffic)."""

    weight: int
    canary_errors: float | None
    stable_errors: float | None
    canary_p95_s: float | None
    stable_p95_s: float | None


def canary_points(rows: Sequence[AnalysisRow]) -> list[CanaryPoint]:
    """The analyses that had numbers, as chart points."""

    def ratio(side: object) -> float | None:
        if not isinstance(side, dict) or not side.get("requests"):
            return None
        return float(side["errors"]) / float(side["requests"])

    def p95(side: object) -> float | None:
        value = side.get("latency_p95_s") if isinstance(side, dict) else None
        return float(value) if value is not None else None

    points = []
    for row in rows:
        canary, stable = row.numbers.get("canary"), row.numbers.get("stable")
        if canary is None or stable is None:
            continue  # the source did not answer that time
        points.append(
            CanaryPoint(row.weight, ratio(canary), ratio(stable), p95(canary), p95(stable))
        )
    return points


def canary_chart(points: Sequence[CanaryPoint]) -> bytes:
    """Two panels, errors above and p95 below, each scaled to its own highest value; blue is
    stable, orange the canary, and a faint vertical line marks each change of weight."""
    width = MARGIN * 2 + max(240, len(points) * POINT_WIDTH)
    height = MARGIN * 3 + PANEL * 2
    pixels = [[WHITE] * width for _ in range(height)]
    step = (width - MARGIN * 2) / max(1, len(points) - 1)
    for index in range(1, len(points)):
        if points[index].weight != points[index - 1].weight:
            x = MARGIN + round(index * step)
            for y in range(MARGIN, height - MARGIN):
                pixels[y][x] = GRID
    panels = (
        (MARGIN, [(p.stable_errors, p.canary_errors) for p in points]),
        (MARGIN * 2 + PANEL, [(p.stable_p95_s, p.canary_p95_s) for p in points]),
    )
    for top, values in panels:
        base = top + PANEL
        highest = max((v for pair in values for v in pair if v is not None), default=0) or 1e-9
        for x in range(MARGIN, width - MARGIN):
            pixels[base][x] = AXIS
        for y in range(top, base + 1):
            pixels[y][MARGIN] = AXIS
        for side, color in ((0, STABLE), (1, CANARY)):
            previous: tuple[int, int] | None = None
            for index, pair in enumerate(values):
                value = pair[side]
                if value is None:
                    previous = None
                    continue
                here = (MARGIN + round(index * step), base - round(value / highest * (PANEL - 2)))
                if previous is not None:
                    _line(pixels, previous, here, color)
                else:
                    _dot(pixels, here, color)
                previous = here
    return _png(pixels)


def _dot(pixels: list[list[Color]], at: tuple[int, int], color: Color) -> None:
    x, y = at
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if 0 <= y + dy < len(pixels) and 0 <= x + dx < len(pixels[0]):
                pixels[y + dy][x + dx] = color


def _line(
    pixels: list[list[Color]], start: tuple[int, int], end: tuple[int, int], color: Color
) -> None:
    (x0, y0), (x1, y1) = start, end
    steps = max(abs(x1 - x0), abs(y1 - y0), 1)
    for i in range(steps + 1):  # two pixels thick, so it reads on a phone
        x = x0 + round((x1 - x0) * i / steps)
        y = y0 + round((y1 - y0) * i / steps)
        pixels[y][x] = color
        if y + 1 < len(pixels):
            pixels[y + 1][x] = color


def _png(pixels: list[list[Color]]) -> bytes:
    height, width = len(pixels), len(pixels[0])
    raw = b"".join(b"\x00" + bytes(v for pixel in row for v in pixel) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
