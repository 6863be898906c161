"""Telegram's HTML parse mode, reproduced closely enough to catch what the real server rejects.

The tokenizer follows tdlib's ``parse_html`` (MessageEntity.cpp): it walks UTF-8 bytes, so the
``byte offset`` in error texts matches what Telegram reports, and entity offsets are counted in
UTF-16 code units as the Bot API does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SUPPORTED_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "u", "ins", "s", "strike", "del"}
    | {"span", "tg-spoiler", "tg-emoji", "code", "pre", "blockquote"}
)
_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "tg-emoji": "custom_emoji",
    "code": "code",
    "pre": "pre",
    "a": "text_link",
}
_NAMED = {b"lt": "<", b"gt": ">", b"amp": "&", b"quot": '"'}
_SPACE = b" \t\n\r\v\0"  # tdlib's is_space: NUL ends names too


class HtmlParseError(ValueError):
    """The text after Telegram's ``Bad Request: can't parse entities: ``."""


@dataclass(frozen=True)
class Entity:
    """A MessageEntity; offset and length in UTF-16 code units."""

    type: str
    offset: int
    length: int
    extra: dict[str, str] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        return {"type": self.type, "offset": self.offset, "length": self.length, **self.extra}


@dataclass
class _Open:
    tag: str
    argument: str
    utf16_offset: int


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def command_entities(text: str) -> list[Entity]:
    """A ``bot_command`` entity for ``/cmd`` or ``/cmd@bot`` at the start, as clients send it."""
    if not text.startswith("/") or len(text) < 2 or text[1].isspace():
        return []
    command = text.split(maxsplit=1)[0]
    return [Entity("bot_command", 0, utf16_len(command))]


def _at(data: bytes, i: int) -> int:
    # tdlib relies on the NUL terminator; 0 past the end keeps its loops intact.
    return data[i] if i < len(data) else 0


def _decode_entity(data: bytes, pos: int) -> tuple[str, int] | None:
    """Decode ``&...;`` at ``pos``; returns (character, next position) or None if not one."""
    end = pos + 1
    value = 0
    if _at(data, end) == ord("#"):
        end += 1
        base, digits = (16, b"0123456789abcdefABCDEF") if _at(data, end) == ord("x") else (10, b"")
        if base == 16:
            end += 1
        else:
            digits = b"0123456789"
        while _at(data, end) and _at(data, end) in digits:
            value = value * base + int(chr(data[end]), base)
            end += 1
            if value >= 0x10FFFF:
                return None
        if value == 0 or end - pos >= 10 or 0xD800 <= value <= 0xDFFF:
            return None
        char = chr(value)
    else:
        while chr(_at(data, end)).isascii() and chr(_at(data, end)).isalpha():
            end += 1
        named = _NAMED.get(data[pos + 1 : end])
        if named is None:
            return None
        char = named
    return char, end + 1 if _at(data, end) == ord(";") else end


def _read_attributes(data: bytes, i: int, tag: str, begin: int) -> tuple[dict[str, str], int]:
    """Parse attributes up to the closing ``>``; returns them and the position of ``>``."""
    attributes: dict[str, str] = {}
    while _at(data, i) != ord(">"):
        while _at(data, i) and _at(data, i) in _SPACE:
            i += 1
        if _at(data, i) == ord(">"):
            break
        name_begin = i
        while _at(data, i) not in _SPACE and _at(data, i) not in b"=>":
            i += 1
        name = data[name_begin:i].decode("utf-8", "replace")
        if not name:
            raise HtmlParseError(f'Empty attribute name in the tag "{tag}" at byte offset {begin}')
        while _at(data, i) and _at(data, i) in _SPACE:
            i += 1
        if _at(data, i) != ord("=") and (tag, name) == ("blockquote", "expandable"):
            attributes[name] = ""  # the one attribute Telegram accepts without a value
            continue
        if _at(data, i) != ord("="):
            raise HtmlParseError(
                "Expected equal sign in declaration of an attribute of the tag "
                f'"{tag}" at byte offset {begin}'
            )
        i += 1
        while _at(data, i) and _at(data, i) in _SPACE:
            i += 1
        if _at(data, i) == 0:
            raise HtmlParseError(f'Unclosed start tag "{tag}" at byte offset {begin}')
        if _at(data, i) not in b"'\"":
            token_begin = i
            while chr(_at(data, i)).isascii() and (
                chr(_at(data, i)).isalnum() or _at(data, i) in b".-"
            ):
                i += 1
            value = data[token_begin:i].decode().lower()
            if _at(data, i) not in _SPACE and _at(data, i) != ord(">"):
                raise HtmlParseError(f"Unexpected end of name token at byte offset {token_begin}")
        else:
            quote, buf = data[i], bytearray()
            i += 1
            while _at(data, i) not in (quote, 0):
                decoded = _decode_entity(data, i) if data[i] == ord("&") else None
                if decoded:
                    buf += decoded[0].encode()
                    i = decoded[1]
                else:
                    buf.append(data[i])
                    i += 1
            i += 1 if _at(data, i) == quote else 0
            value = buf.decode("utf-8", "replace")
        if _at(data, i) == 0:
            raise HtmlParseError(f"Unclosed start tag at byte offset {begin}")
        attributes[name] = value
    return attributes, i


def _argument(tag: str, attributes: dict[str, str], begin: int) -> str:
    cls = attributes.get("class", "")
    if tag == "a":
        return attributes.get("href", "")
    if tag == "code" and cls.startswith("language-"):
        return cls.removeprefix("language-")
    if tag == "tg-emoji":
        return attributes.get("emoji-id", "")
    if tag == "blockquote":
        return "1" if "expandable" in attributes else ""
    if tag == "span" and cls != "tg-spoiler":
        raise HtmlParseError(f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
    return ""


def _close(opened: _Open, utf16_offset: int, entities: list[Entity]) -> None:
    length = utf16_offset - opened.utf16_offset
    tag, argument, offset = opened.tag, opened.argument, opened.utf16_offset
    if length == 0 or (tag == "a" and not argument):
        return
    if tag == "blockquote":
        kind = "expandable_blockquote" if argument else "blockquote"
        entities.append(Entity(kind, offset, length))
        return
    last = entities[-1] if entities else None
    if (
        tag == "pre"
        and last
        and last.type == "code"
        and (last.offset, last.length)
        == (
            offset,
            length,
        )
    ):
        # <pre><code class="language-x"> is one pre entity with a language.
        language = last.extra.get("language")
        entities[-1] = Entity("pre", offset, length, {"language": language} if language else {})
        return
    extra = {"a": {"url": argument}, "tg-emoji": {"custom_emoji_id": argument}}.get(tag, {})
    if tag == "code" and argument:
        extra = {"language": argument}  # only kept when the enclosing <pre> closes
    entities.append(Entity(_ENTITY_TYPES[tag], offset, length, extra))


def parse_html(source: str) -> tuple[str, list[Entity]]:
    """Parse Telegram HTML into plain text and entities, or raise HtmlParseError."""
    data = source.encode("utf-8")
    out = bytearray()
    utf16_offset = 0
    stack: list[_Open] = []
    entities: list[Entity] = []
    i = 0
    while i < len(data):
        c = data[i]
        decoded = _decode_entity(data, i) if c == ord("&") else None
        if decoded:
            out += decoded[0].encode()
            utf16_offset += utf16_len(decoded[0])
            i = decoded[1]
            continue
        if c != ord("<"):
            out.append(c)
            if c & 0xC0 != 0x80:  # first byte of a character; 4-byte ones are surrogate pairs
                utf16_offset += 2 if c >= 0xF0 else 1
            i += 1
            continue
        begin = i
        i += 1
        if _at(data, i) != ord("/"):
            name_begin = i
            while _at(data, i) not in _SPACE and _at(data, i) != ord(">"):
                i += 1
            if _at(data, i) == 0:
                raise HtmlParseError(f"Unclosed start tag at byte offset {begin}")
            tag = data[name_begin:i].decode("utf-8", "replace").lower()
            if tag not in SUPPORTED_TAGS:
                raise HtmlParseError(f'Unsupported start tag "{tag}" at byte offset {begin}')
            attributes, i = _read_attributes(data, i, tag, begin)
            stack.append(_Open(tag, _argument(tag, attributes, begin), utf16_offset))
        else:
            if not stack:
                raise HtmlParseError(f"Unexpected end tag at byte offset {begin}")
            i += 1
            name_begin = i
            while _at(data, i) not in _SPACE and _at(data, i) != ord(">"):
                i += 1
            end_tag = data[name_begin:i].decode("utf-8", "replace")
            while _at(data, i) and _at(data, i) in _SPACE:
                i += 1
            if _at(data, i) != ord(">"):
                raise HtmlParseError(f"Unclosed end tag at byte offset {begin}")
            opened = stack.pop()
            if end_tag and end_tag.lower() != opened.tag:
                raise HtmlParseError(
                    f'Unmatched end tag at byte offset {begin}, expected "</{opened.tag}>", '
                    f'found "</{end_tag}>"'
                )
            _close(opened, utf16_offset, entities)
        i += 1  # past the '>'
    if stack:
        raise HtmlParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    # A language only survives on <pre><code>; a lone <code class=...> is plain code.
    entities = [Entity(e.type, e.offset, e.length) if e.type == "code" else e for e in entities]
    # Same span means nested; the outer tag closed later and is listed first.
    order = sorted(enumerate(entities), key=lambda p: (p[1].offset, -p[1].length, -p[0]))
    return out.decode("utf-8", "replace"), [entity for _, entity in order]
