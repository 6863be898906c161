import pytest

from bot.dev.sandbox.html import Entity, HtmlParseError, command_entities, parse_html, utf16_len


def test_tags_become_entities_and_text_is_plain() -> None:
    text, entities = parse_html(
        '<b>Deploy</b> <i>api</i> to <a href="https://x.io/?a=1&amp;b=2">prod</a>'
    )
    assert text == "Deploy api to prod"
    assert entities == [
        Entity("bold", 0, 6),
        Entity("italic", 7, 3),
        Entity("text_link", 14, 4, {"url": "https://x.io/?a=1&b=2"}),
    ]


def test_html_entities_are_decoded() -> None:
    text, entities = parse_html("&lt;tag&gt; &amp; &quot;q&quot; &#65;&#x42; &nbsp; & alone")
    assert text == '<tag> & "q" AB &nbsp; & alone'
    assert entities == []


def test_nested_and_special_tags() -> None:
    source = (
        '<pre><code class="language-python">x = 1</code></pre>'
        '<span class="tg-spoiler">s</span><tg-spoiler>t</tg-spoiler>'
        "<blockquote expandable>q</blockquote><blockquote>r</blockquote>"
        '<code class="language-sh">ls</code><strong><em><ins><del>z</del></ins></em></strong>'
    )
    text, entities = parse_html(source)
    assert text == "x = 1stqrlsz"
    types = [(e.type, e.offset, e.length, e.extra) for e in entities]
    assert types == [
        ("pre", 0, 5, {"language": "python"}),
        ("spoiler", 5, 1, {}),
        ("spoiler", 6, 1, {}),
        ("expandable_blockquote", 7, 1, {}),
        ("blockquote", 8, 1, {}),
        ("code", 9, 2, {}),  # language only survives inside <pre>
        ("bold", 11, 1, {}),
        ("italic", 11, 1, {}),
        ("underline", 11, 1, {}),
        ("strikethrough", 11, 1, {}),
    ]


def test_offsets_are_utf16_code_units() -> None:
    text, entities = parse_html("😀 <b>é</b>")
    assert text == "😀 é"
    assert entities == [Entity("bold", 3, 1)]
    assert utf16_len("😀") == 2


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("Status: <foo>x</foo>", 'Unsupported start tag "foo" at byte offset 8'),
        ("hello <b>world", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
        ("x </b>", "Unexpected end tag at byte offset 2"),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("é<b", "Unclosed start tag at byte offset 2"),
        ("<b>x</b", "Unclosed end tag at byte offset 4"),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ("<a href>x</a>", 'Expected equal sign in declaration of an attribute of the tag "a"'),
        ("<br>", 'Unsupported start tag "br" at byte offset 0'),
    ],
)
def test_telegram_error_texts(source: str, error: str) -> None:
    with pytest.raises(HtmlParseError) as caught:
        parse_html(source)
    assert str(caught.value).startswith(error)


def test_empty_links_and_empty_tags_make_no_entities() -> None:
    assert parse_html('<a href="">x</a><b></b>') == ("x", [])


def test_command_entities() -> None:
    assert command_entities("/deploy@opsgate_bot api") == [Entity("bot_command", 0, 19)]
    assert command_entities("/status") == [Entity("bot_command", 0, 7)]
    assert command_entities("hello /status") == []
    assert command_entities("/ x") == []


def test_entity_to_api() -> None:
    link = Entity("text_link", 1, 2, {"url": "https://e.x"})
    assert link.to_api() == {"type": "text_link", "offset": 1, "length": 2, "url": "https://e.x"}
