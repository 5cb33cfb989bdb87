"""HTTP edge: request parsing, the one place our errors become responses, and error shapes."""
from __future__ import annotations

import functools
import json
import logging
from typing import Any, Callable

from chalice import Response

from chalicelib.auth import roles
from chalicelib.platform.errors import Forbidden, InvalidRequest, NotFound, PayloadTooLarge, RunnerError, Unauthenticated
from chalicelib.platform.paging import PageRequest, page_request

logger = logging.getLogger("runner.http")

MAX_BODY_BYTES = 256 * 1024
# Objects and arrays nested deeper in a body are a 400. Past about 1000 levels the JSON decoder
# itself fails (RecursionError); a little less parses, but a job stored so made reading it and
# listing the account's jobs fail for good (500s).
MAX_JSON_DEPTH = 64
MAX_PAGE = 1_000_000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 100
MAX_LOG_OFFSET = 2**53

# Chalice's and API Gateway's own error codes -> ours.
_FOREIGN_CODES = {
    400: "InvalidRequest", 401: "Unauthenticated", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 409: "Conflict", 413: "PayloadTooLarge", 415: "UnsupportedMediaType",
    422: "Unprocessable", 429: "TooManyRequests", 500: "InternalError", 502: "InternalError", 503: "Unavailable",
}


MAX_KEY_BYTES = 1024  # DynamoDB's limit for a sort key value (2048 for a partition key)


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    """A JSON response (no body at all for 204)."""
    if status == 204:
        return Response(body="", status_code=204, headers=headers or {})
    return Response(body=body, status_code=status,
                    headers={"Content-Type": "application/json", **(headers or {})})


def error_response(error: RunnerError) -> Response:
    """The response for one of our errors."""
    return json_response(error.to_body(), error.status, error.headers())


def internal_error_body() -> dict:
    """What a client sees of a fault of ours: nothing of its cause."""
    return {"code": "InternalError", "message": "an internal error occurred; it has been logged"}


def foreign_error_body(status: int, body: Any) -> dict:
    """Our error shape for an error body produced by Chalice or API Gateway."""
    message = None
    if isinstance(body, dict):
        message = body.get("Message") or body.get("message")
    if status == 403 and message == "Missing Authentication Token":
        status, message = 404, "no such route"
    code = _FOREIGN_CODES.get(status, "Error")
    if status >= 500:
        return internal_error_body()
    return {"code": code, "message": str(message or code)}


def parse_json_body(raw: bytes | None, required: bool = True) -> Any:
    """The request's JSON document; InvalidRequest for malformed JSON or one nested deeper than
    MAX_JSON_DEPTH, 413 for a huge body."""
    if raw is not None and len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body exceeds {MAX_BODY_BYTES} bytes", "body")
    if raw is None or not raw.strip():
        if required:
            raise InvalidRequest("body", "a JSON object is required")
        return None
    too_deep = InvalidRequest("body", f"nests objects and arrays more than {MAX_JSON_DEPTH} deep")
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("body", f"malformed JSON: {exc}") from None
    except RecursionError:  # deeper than the decoder itself goes (about 1000 levels)
        raise too_deep from None
    if _nested_deeper_than(document, MAX_JSON_DEPTH):
        raise too_deep
    return document


def _nested_deeper_than(document: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` deep in `document` (walked without recursion)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                return True
            pending.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return False


def _int_param(params: dict, name: str, default: Any, low: int, high: int) -> Any:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip(), 10)
    except (ValueError, AttributeError):
        raise InvalidRequest(name, f"must be an integer from {low} to {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise InvalidRequest(name, f"must be an integer from {low} to {high}, got {value}")
    return value


def page_params(params: dict | None) -> tuple[int, int]:
    """`page` (from 0) and `size` (1..100) of a list request."""
    params = params or {}
    return (_int_param(params, "page", 0, 0, MAX_PAGE),
            _int_param(params, "size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE))


def list_params(params: dict | None) -> PageRequest:
    """`page`, `size` and `cursor` of a list request (a cursor carries its own page and size)."""
    params = params or {}
    request = page_request(_int_param(params, "page", None, 0, MAX_PAGE),
                           _int_param(params, "size", None, 1, MAX_PAGE_SIZE),
                           params.get("cursor"), DEFAULT_PAGE_SIZE)
    if not (0 <= request.page <= MAX_PAGE and 1 <= request.size <= MAX_PAGE_SIZE):
        raise InvalidRequest("cursor", "is not a cursor this service answered (X-Runner-Next-Cursor)")
    return request


def bool_param(params: dict | None, name: str, default: bool = False) -> bool:
    """A true/false query parameter."""
    raw = (params or {}).get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidRequest(name, f"must be true or false, got {raw!r}")


def events_params(params: dict | None) -> tuple[int, int]:
    """`after` (the last seq seen, default none) and `size` (1..1000) of an events request."""
    params = params or {}
    return (_int_param(params, "after", -1, -1, 2**53),
            _int_param(params, "size", DEFAULT_PAGE_SIZE, 1, 1000))


def offset_param(params: dict | None) -> int:
    """`offset` of a log request: a byte offset into the log's UTF-8 text, 0 by default."""
    return _int_param(params or {}, "offset", 0, 0, MAX_LOG_OFFSET)


def caller_name(request: Any) -> str | None:
    """The username of the token the authorizer accepted."""
    context = (getattr(request, "context", None) or {}).get("authorizer") or {}
    return context.get("principalId")


def caller_account(request: Any) -> str:
    """The account of the token the authorizer accepted."""
    context = (getattr(request, "context", None) or {}).get("authorizer") or {}
    account = context.get("accountAlias")
    if not account:
        raise Unauthenticated("no authenticated caller")
    return account


def caller_role(request: Any) -> str | None:
    """The role the authorizer found on the caller's user."""
    context = (getattr(request, "context", None) or {}).get("authorizer") or {}
    return context.get("role")


def api(view: Callable[..., Any], request_getter: Callable[[], Any], route: str, needed: str) -> Callable[..., Any]:
    """Wrap a view: the caller's account must be the path's and its role at least `needed`
    (chalicelib/auth/roles.py; PUBLIC: no caller at all), and our errors become responses."""

    @functools.wraps(view)
    def wrapped(**kwargs: Any) -> Any:
        try:
            for name, value in kwargs.items():
                # DynamoDB refuses (ValidationException) a key value over 1024 bytes: no such item.
                if len(str(value).encode("utf-8")) > MAX_KEY_BYTES:
                    raise NotFound(f"no {name} is longer than {MAX_KEY_BYTES} bytes", name)
            if needed != roles.PUBLIC:
                request = request_getter()
                if "accountAlias" in kwargs and caller_account(request) != kwargs["accountAlias"]:
                    raise Forbidden(f"your token does not give access to account {kwargs['accountAlias']}",
                                    "accountAlias")
                role = caller_role(request)
                if not roles.at_least(role, needed):
                    raise Forbidden(f"{route} requires {needed} (your role is {role})", "role")
            return view(**kwargs)
        except RunnerError as error:
            return error_response(error)
        except Exception:  # noqa: BLE001 - the last line of defence: log it, answer no detail
            logger.exception("unhandled error in %s", view.__name__)
            return json_response(internal_error_body(), 500)

    wrapped.required_role = needed  # type: ignore[attr-defined]  # read by the tests of the role table
    return wrapped


def idempotent(view: Callable[..., Any], request_getter: Callable[[], Any], method: str, path: str,
               store_getter: Callable[[], Any]) -> Callable[..., Any]:
    """Wrap a view so that a request with an Idempotency-Key gets the first answer of that key
    (chalicelib/platform/idempotency.py); inside `api`, so that only the account's callers reach it."""
    from chalicelib.platform import idempotency

    @functools.wraps(view)
    def wrapped(**kwargs: Any) -> Any:
        request = request_getter()
        key = idempotency.parse_key((request.headers or {}).get(idempotency.HEADER))
        if key is None:
            return view(**kwargs)
        store = store_getter()
        begun = store.begin(kwargs["accountAlias"], idempotency.route_of(method, path, kwargs), key,
                            idempotency.fingerprint(request.query_params, request.raw_body))
        if isinstance(begun, idempotency.Answer):
            return Response(body=begun.document, status_code=begun.status,
                            headers={**begun.headers, "Idempotent-Replayed": "true"})
        try:
            response = view(**kwargs)
        except RunnerError as error:
            response = error_response(error)
        except BaseException:
            store.release(begun)  # a fault of ours: a retry must run again
            raise
        answer = _answer_of(response)
        if answer.status >= 500:
            store.release(begun)
        else:
            store.complete(begun, answer)
        return response

    return wrapped


def _answer_of(response: Any) -> Any:
    """A view's answer as the idempotency table keeps it."""
    from chalicelib.platform.idempotency import Answer

    if not isinstance(response, Response):
        return Answer(200, json.dumps(response), True, {"Content-Type": "application/json"})
    body = response.body
    if isinstance(body, (dict, list)):
        return Answer(response.status_code, json.dumps(body), True, dict(response.headers or {}))
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body or "")
    return Answer(response.status_code, text, False, dict(response.headers or {}))


def reshape_foreign_errors(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """HTTP middleware: Chalice's own error bodies (Code/Message) answered in our shape."""
    response = get_response(event)
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and "Code" in body and "Message" in body:
        response.body = foreign_error_body(response.status_code, body)
        response.headers["Content-Type"] = "application/json"
    return response


def count_aws_calls(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """HTTP middleware (when `report_aws_calls`): header X-Runner-AWS-Calls lists the AWS calls a request made."""
    from chalicelib.platform.aws import counting_calls
    from chalicelib.platform.config import get_settings

    if not get_settings().report_aws_calls:
        return get_response(event)
    with counting_calls() as calls:
        response = get_response(event)
    response.headers["X-Runner-AWS-Calls"] = ",".join(calls) or "-"
    return response
