"""OFREP, the OpenFeature Remote Evaluation Protocol: single and bulk flag evaluation over HTTP.

The wire format follows open-feature/protocol `service/openapi.yaml`:

    POST /ofrep/v1/evaluate/flags/{key}   200 {key, value, reason, variant, metadata}
                                          404 {key, errorCode: FLAG_NOT_FOUND, errorDetails}
                                          400 {key, errorCode, errorDetails}: PARSE_ERROR,
                                              INVALID_CONTEXT, TARGETING_KEY_MISSING, GENERAL
    POST /ofrep/v1/evaluate/flags         200 {flags: [success or failure items]} + ETag
                                          304 (no body) when If-None-Match matches the ETag
                                          400 {errorCode, errorDetails}
    both                                  401 without `Authorization: Bearer <token>`, or
                                              always when no token is configured
                                          413 {errorDetails}: body over MAX_BODY_BYTES
                                          500 {errorDetails}: the flag source failed

A key that can never name a flag gets 404 FLAG_NOT_FOUND: 400's error codes describe the
context, not the key. `value` is omitted when the evaluation has none (the spec's
`codeDefaultFlag`: the caller's code default applies).

`Ofrep` holds the two endpoints; `ofrep_routes` mounts them in Starlette, and
bot/http/ofrep_fast.py answers single-flag requests with `Ofrep.answer_one` straight from
the HTTP parser, before any ASGI app.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bot.http.bearer import bearer_matches, bearer_of, bearer_ok
from services.flags.engine import context_problem
from services.flags.types import (
    ErrorCode,
    Evaluation,
    EvaluationContext,
    Reason,
    is_valid_flag_key,
)

log = logging.getLogger(__name__)

PREFIX = "/ofrep/v1/evaluate/flags"
MAX_BODY_BYTES = 1_000_000
# Past the limit a body is still read, and dropped, up to this much: closing on unread bytes
# makes the kernel send a reset, and the client then loses the 413 it was answered.
_DRAIN_LIMIT = 4 * MAX_BODY_BYTES
_TOO_LARGE = f"request body over {MAX_BODY_BYTES} bytes"
_ECHOED_KEY_CHARS = 200  # a refused key is echoed back, but never at any length
# The codes the spec's evaluationFailure allows; anything else is reported as GENERAL.
_FAILURE_CODES = frozenset(
    {
        ErrorCode.PARSE_ERROR,
        ErrorCode.TARGETING_KEY_MISSING,
        ErrorCode.INVALID_CONTEXT,
        ErrorCode.GENERAL,
    }
)
_KEY_RULE = "lowercase letters, digits, '_', '-' and '.', starting with a letter, at most 128"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Built once: json.loads and json.dumps build a new decoder or encoder on every call that
# passes an option. The encoder writes exactly what Starlette's JSONResponse would write.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class Answer(NamedTuple):  # a tuple: built on every evaluation, and cheaply
    """An OFREP answer before it is framed: the same bytes whether a Starlette route or the
    fast path (bot/http/ofrep_fast.py) sends it."""

    status: int
    body: bytes  # JSON
    headers: tuple[tuple[str, str], ...] = ()  # names in lower case, as Starlette sends them

    def response(self) -> Response:
        headers = dict(self.headers) or None
        return Response(self.body, self.status, headers, media_type="application/json")


def _json(content: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    return Answer(status, _ENCODER.encode(content).encode("utf-8"), headers)


class FlagSource(Protocol):
    def etag(self) -> str: ...  # changes whenever anything that affects an evaluation changes
    def evaluate(self, key: str, ctx: EvaluationContext) -> Evaluation: ...
    def evaluate_all(self, ctx: EvaluationContext) -> list[Evaluation]: ...


class _Refused(Exception):
    """The request is answered before any evaluation; `status` and the OFREP error say why."""

    def __init__(self, status: int, details: str, code: ErrorCode | None = None) -> None:
        super().__init__(details)
        self.status, self.details, self.code = status, details, code

    def answer(self, key: str | None = None) -> Answer:
        body: dict[str, str] = {}
        if key is not None and self.code is not None:
            body["key"] = key[:_ECHOED_KEY_CHARS]
        if self.code is not None:
            body["errorCode"] = self.code.value
        body["errorDetails"] = self.details
        # Closing stops a client still sending a body we will never read.
        return _json(body, self.status, (("connection", "close"),) if self.status == 413 else ())


class Ofrep:
    """The two OFREP endpoints over one flag source. An empty `token` refuses every request."""

    def __init__(self, source: FlagSource, token: str) -> None:
        self._source = source
        self._expected = token.encode()
        self._expected_header = f"Bearer {token}".encode("latin-1", "replace") if token else b""

    async def evaluate_one(self, request: Request, key: str) -> Response:
        """POST PREFIX/{key}: `key` as the path gave it (a query string is appended here)."""
        return (await self._evaluate_one(request, key)).response()

    async def _evaluate_one(self, request: Request, key: str) -> Answer:
        if not bearer_ok(request, self._expected):
            return _unauthorised()
        query: bytes = request.scope["query_string"]
        if query:  # the provider does not encode keys: `a?b` arrives as a query, no key at all
            key = f"{key}?{query.decode('latin-1')}"
        if not is_valid_flag_key(key):
            details = f"not a valid flag key ({_KEY_RULE} characters), so no such flag"
            return _Refused(404, details, ErrorCode.FLAG_NOT_FOUND).answer(key)
        try:
            body = await _read_body(request)
        except _Refused as refused:
            return refused.answer(key)
        except Exception:  # the boundary: log it, answer the spec's 500 without internals
            log.exception("OFREP evaluation of %s failed", key)
            return _internal_error()
        return self._evaluate_body(key, body)

    def answer_one(self, authorization: str, key: str, body: bytes) -> Answer:
        """`evaluate_one` for a request read whole, whose key was found valid and came without
        a query string; `authorization` is its (first) Authorization header, or ""."""
        # The header as clients send it, in one constant-time compare; any other spelling
        # (case, spaces) goes through the full parse.
        given = authorization.encode("latin-1")
        if not (
            (self._expected_header and hmac.compare_digest(given, self._expected_header))
            or bearer_matches(bearer_of(authorization), self._expected)
        ):
            return _unauthorised()
        return self._evaluate_body(key, body)

    def _evaluate_body(self, key: str, body: bytes) -> Answer:
        try:
            ctx, _ = _parse_context(body)
            evaluation = self._source.evaluate(key, ctx)
        except _Refused as refused:
            return refused.answer(key)
        except Exception:  # the boundary: log it, answer the spec's 500 without internals
            log.exception("OFREP evaluation of %s failed", key)
            return _internal_error()
        if _is_failure(evaluation):
            status, failure = _failure(evaluation)
            return _json(failure, status)
        return _success_answer(evaluation)

    async def evaluate_all(self, request: Request) -> Response:
        if not bearer_ok(request, self._expected):
            return _unauthorised().response()
        try:
            ctx, raw = await _read_context(request)
            # Read before evaluating: if flags change in between, the tag is the older one and
            # the next poll fetches again, never the reverse (a stale body kept for good).
            etag = _bulk_etag(self._source.etag(), raw)
            if _matches(request.headers.get("if-none-match"), etag):
                return Response(status_code=304, headers={"ETag": etag})
            evaluations = self._source.evaluate_all(ctx)
        except _Refused as refused:
            return refused.answer().response()
        except Exception:
            log.exception("OFREP bulk evaluation failed")
            return _internal_error().response()
        items = [_failure(e)[1] if _is_failure(e) else _success(e) for e in evaluations]
        return _json({"flags": items}, headers=(("etag", etag),)).response()


def ofrep_routes(source: FlagSource, token: str) -> list[BaseRoute]:
    """The two OFREP routes. An empty `token` refuses every request: OFREP is never open."""
    if not token:
        log.warning("OFREP has no token configured: every evaluation request is refused")
    ofrep = Ofrep(source, token)

    async def evaluate_one(request: Request) -> Response:
        key: str = request.path_params["key"]
        return await ofrep.evaluate_one(request, key)

    return [
        Route(PREFIX, ofrep.evaluate_all, methods=["POST"]),
        # `path` so `a/b` reaches the key check and gets a clear answer, not a bare 404.
        Route(PREFIX + "/{key:path}", evaluate_one, methods=["POST"]),
    ]


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 12 or int(declared) > _DRAIN_LIMIT):
        raise _Refused(413, _TOO_LARGE)  # from the headers alone: not a byte of it is read
    # ASGI messages read as Starlette's request.stream() reads them, without its generator.
    body, received, more = bytearray(), 0, True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        received += len(chunk)  # counted as it arrives: lengths can be absent
        if received > _DRAIN_LIMIT:
            break
        if received <= MAX_BODY_BYTES:
            body += chunk
    if received > MAX_BODY_BYTES:
        raise _Refused(413, _TOO_LARGE)
    return bytes(body)


async def _read_context(request: Request) -> tuple[EvaluationContext, Mapping[str, Any]]:
    """The evaluation context and the raw `context` object it came from."""
    return _parse_context(await _read_body(request))


def _parse_context(body: bytes) -> tuple[EvaluationContext, Mapping[str, Any]]:
    try:
        # What json.loads does with bytes (the encoding found from the first bytes).
        # `{` first: UTF-8, as json.detect_encoding would find, without asking it.
        encoding = "utf-8" if body[:1] == b"{" and body[1:2] != b"\0" else None
        text = body.decode(encoding or json.detect_encoding(body), "surrogatepass")
        document = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise _Refused(400, f"request body is not JSON: {exc}", ErrorCode.PARSE_ERROR) from None
    if not isinstance(document, dict):
        raise _Refused(400, "request body must be a JSON object", ErrorCode.PARSE_ERROR)
    raw = document.get("context", {})  # a provider without a context sends `{}`
    if not isinstance(raw, dict):
        raise _Refused(400, "'context' must be a JSON object", ErrorCode.INVALID_CONTEXT)
    targeting_key = raw.get("targetingKey")
    if targeting_key is not None and not isinstance(targeting_key, str):
        raise _Refused(400, "'targetingKey' must be a string", ErrorCode.INVALID_CONTEXT)
    attributes = {name: value for name, value in raw.items() if name != "targetingKey"}
    # An empty targeting key identifies nobody: the same as none, so bucketing never groups
    # every anonymous caller under "".
    ctx = EvaluationContext(targeting_key or None, attributes)
    # Checked here too, so a bulk request gets the spec's one 400, not an error per flag.
    problem = context_problem(ctx)
    if problem is not None:
        raise _Refused(400, problem, ErrorCode.INVALID_CONTEXT)
    return ctx, raw


def _bulk_etag(source_etag: str, context: Mapping[str, Any]) -> str:
    # The answer depends on the context as well as the flags: a tag of the flags alone would
    # give a client that changed its context a 304 for someone else's answer.
    canonical = json.dumps([source_etag, context], sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match uses weak comparison: `W/"x"` matches `"x"`; `*` matches anything."""
    if if_none_match is None:
        return False
    tags = (tag.strip() for tag in if_none_match.split(","))
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in tags)


def _is_failure(evaluation: Evaluation) -> bool:
    return evaluation.error_code is not None or evaluation.reason is Reason.ERROR


# The engine hands out one Evaluation object per flag definition, variant and reason
# (services/flags/engine.py `_resolve`): its answer is encoded once, not on every request. The
# cache holds the evaluation itself, so an id here cannot be reused by another object.
_ENCODED: dict[int, tuple[Evaluation, Answer]] = {}
_MAX_ENCODED = 4096


def _success_answer(evaluation: Evaluation) -> Answer:
    known = _ENCODED.get(id(evaluation))
    if known is not None and known[0] is evaluation:
        return known[1]
    answer = _json(_success(evaluation))
    if len(_ENCODED) >= _MAX_ENCODED:
        _ENCODED.clear()
    _ENCODED[id(evaluation)] = (evaluation, answer)
    return answer


def _success(evaluation: Evaluation) -> dict[str, Any]:
    body: dict[str, Any] = {"key": evaluation.key}
    if evaluation.value is not None:
        body["value"] = evaluation.value
    body["reason"] = evaluation.reason.value
    if evaluation.variant is not None:
        body["variant"] = evaluation.variant
    body["metadata"] = dict(evaluation.metadata)
    return body


def _failure(evaluation: Evaluation) -> tuple[int, dict[str, Any]]:
    code = evaluation.error_code or ErrorCode.GENERAL
    details = evaluation.error_message or code.value.lower().replace("_", " ")
    if code is ErrorCode.FLAG_NOT_FOUND:
        status = 404
    else:
        status = 400
        if code not in _FAILURE_CODES:
            code, details = ErrorCode.GENERAL, f"{code.value}: {details}"
    return status, {"key": evaluation.key, "errorCode": code.value, "errorDetails": details}


def _unauthorised() -> Answer:
    return _json(
        {"errorDetails": "missing or wrong bearer token"},
        401,
        (("www-authenticate", 'Bearer realm="ofrep"'),),
    )


def _internal_error() -> Answer:
    return _json({"errorDetails": "internal error while evaluating"}, 500)
