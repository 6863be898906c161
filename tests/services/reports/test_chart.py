"""The canary chart: points from the stored analyses, and a PNG of the right size."""

import struct

from services.deploy.canary_rows import AnalysisRow, Phase
from services.reports.chart import CanaryPoint, canary_chart, canary_points


def test_a_canary_chart_takes_the_analyses_that_had_numbers() -> None:
    def side(requests: int, errors: int, p95: float | None) -> dict[str, object]:
        return {"requests": requests, "errors": errors, "latency_p95_s": p95, "memory_mib": 20}

    rows = [
        AnalysisRow(
            "t1",
            Phase.STEPS,
            5,
            "pass",
            {"canary": side(20, 1, 0.02), "stable": side(400, 4, 0.01)},
        ),
        AnalysisRow("t2", Phase.STEPS, 5, "unavailable", {"note": "Prometheus did not answer"}),
        AnalysisRow(
            "t3",
            Phase.STEPS,
            25,
            "thin",
            {"canary": side(0, 0, None), "stable": side(300, 3, 0.01)},
        ),
    ]
    points = canary_points(rows)
    assert points == [
        CanaryPoint(5, 0.05, 0.01, 0.02, 0.01),
        CanaryPoint(25, None, 0.01, None, 0.01),
    ]
    png = canary_chart(points)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (280, 280)
