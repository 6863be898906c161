from handlers.render import code, duration, esc, join_lines


def test_escaping() -> None:
    assert esc("<b>&") == "&lt;b&gt;&amp;"
    assert code("a<b") == "<code>a&lt;b</code>"


def test_join_lines_drops_whole_lines_under_limit() -> None:
    lines = [f"<b>line {i}</b> " + "x" * 80 for i in range(200)]
    text = join_lines(lines, limit=4096)
    assert len(text) <= 4096
    assert text.endswith("more line(s)")
    kept = text.split("\n")[:-1]
    assert all(line.startswith("<b>") and line.endswith("x") for line in kept)
    assert join_lines(["a", "b"]) == "a\nb"


def test_duration() -> None:
    assert duration(5) == "5s"
    assert duration(65) == "1m 5s"
    assert duration(3 * 3600 + 60) == "3h 1m"
    assert duration(90000) == "1d 1h"
