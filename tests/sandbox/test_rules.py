"""Parameter decoding and Telegram's limits."""

import json
import struct

import pytest

from bot.dev.sandbox.rules import (
    ApiError,
    Params,
    Upload,
    check_length,
    formatted,
    image_size,
    keyboard,
)


def test_params_decode_form_strings_and_json_values() -> None:
    form = Params({"chat_id": "-100", "flag": "true", "markup": '{"a": 1}', "text": "123"})
    assert form.integer("chat_id") == -100 and form.flag("flag") and not form.flag("missing")
    assert form.obj("markup") == {"a": 1} and form.text("text") == "123"
    typed = Params({"chat_id": -100, "flag": True, "markup": {"a": 1}})
    assert (
        typed.integer("chat_id") == -100 and typed.flag("flag") and typed.obj("markup") == {"a": 1}
    )
    with pytest.raises(ApiError, match="invalid chat_id"):
        Params({"chat_id": "@ops"}).integer("chat_id")


def test_params_find_uploads_directly_or_by_attach_uri() -> None:
    upload = Upload("a.txt", "text/plain", b"x")
    assert Params({}, {"document": upload}).file("document") is upload
    assert Params({"document": "attach://f1"}, {"f1": upload}).file("document") is upload
    assert Params({"document": "BQAC1"}).file("document") == "BQAC1"


def test_errors_have_telegrams_shape() -> None:
    error = ApiError(429, "Too Many Requests: retry after 3", {"retry_after": 3})
    assert error.body() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }


def test_only_html_is_parsed() -> None:
    assert formatted("<b>x</b>", "html")[0] == "x"
    assert formatted("*x*", "MarkdownV2") == ("*x*", [])
    with pytest.raises(ApiError, match="can't parse entities: Unsupported start tag"):
        formatted("<x>", "HTML")


@pytest.mark.parametrize(
    ("text", "what", "error"),
    [
        ("", "text", "message text is empty"),
        ("a" * 4097, "text", "message is too long"),
        ("a" * 1025, "caption", "message caption is too long"),
    ],
)
def test_length_limits(text: str, what: str, error: str) -> None:
    with pytest.raises(ApiError, match=error):
        check_length(text, what)


def test_lengths_at_the_limit_pass() -> None:
    check_length("a" * 4096, "text")
    check_length("a" * 1024, "caption")
    check_length("", "caption")


def test_keyboard_validation() -> None:
    inline = {"inline_keyboard": [[{"text": "A", "callback_data": "a" * 64}]]}
    assert keyboard(Params({"reply_markup": json.dumps(inline)})) == inline
    assert keyboard(Params({"reply_markup": {"keyboard": [[{"text": "x"}]]}})) is None
    for data in ("", "a" * 65):
        bad = {"inline_keyboard": [[{"text": "A", "callback_data": data}]]}
        with pytest.raises(ApiError, match="BUTTON_DATA_INVALID"):
            keyboard(Params({"reply_markup": bad}))


def test_image_size_reads_png_and_jpeg_headers() -> None:
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 640, 480)
    assert image_size(png) == (640, 480)
    app0 = b"\xff\xe0" + struct.pack(">H", 4) + b"JF"
    sof0 = b"\xff\xc0" + struct.pack(">HBHH", 11, 8, 200, 300)
    assert image_size(b"\xff\xd8" + app0 + sof0 + b"\x00" * 8) == (300, 200)
    assert image_size(b"GIF89a") is None
