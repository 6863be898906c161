"""A small PNG bar chart of deploys per day (succeeded, failed, rolled back by hand), drawn
pixel by pixel and encoded with zlib: no plotting library for one picture.

    ┃ ▇          green: succeeded   red: failed (rolled back by opsgate)
    ┃ ▇ ▇    ▇   orange: /rollback
    ┗━━━━━━━━━   one column per day, oldest on the left
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from services.reports.dora import DayCount

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
AXIS: Color = (90, 90, 90)
GRID: Color = (230, 230, 230)
SUCCEEDED: Color = (46, 160, 67)
FAILED: Color = (218, 54, 51)
ROLLED_BACK: Color = (230, 145, 30)
COLUMN, GAP, MARGIN, HEIGHT = 24, 10, 20, 200


def bar_chart(days: Sequence[DayCount]) -> bytes:
    """One stacked bar a day; the tallest day fills the height."""
    width = MARGIN * 2 + len(days) * (COLUMN + GAP)
    height = HEIGHT + MARGIN * 2
    pixels = [[WHITE] * width for _ in range(height)]
    top = max((d.succeeded + d.failed + d.rolled_back for d in days), default=0) or 1
    unit = HEIGHT / top
    base = MARGIN + HEIGHT  # the x axis
    for level in range(1, top + 1):  # a faint line per deploy, when there are few
        if top <= 20:
            y = base - round(level * unit)
            for x in range(MARGIN, width - MARGIN):
                pixels[y][x] = GRID
    for index, day in enumerate(days):
        left = MARGIN + GAP // 2 + index * (COLUMN + GAP)
        y = base
        for count, color in ((day.succeeded, SUCCEEDED), (day.failed, FAILED),
                             (day.rolled_back, ROLLED_BACK)):  # fmt: skip
            tall = round(count * unit)
            for row in range(y - tall, y):
                for x in range(left, left + COLUMN):
                    pixels[row][x] = color
            y -= tall
    for x in range(MARGIN, width - MARGIN):
        pixels[base][x] = AXIS
    for y in range(MARGIN, base + 1):
        pixels[y][MARGIN] = AXIS
    return _png(pixels)


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
