"""One exception hierarchy for the whole service; chalicelib/platform/web.py maps it to HTTP."""
from __future__ import annotations

from typing import Sequence


class RunnerError(Exception):
    """Base of every error the service raises on purpose."""

    status = 500
    code = "InternalError"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_body(self) -> dict:
        """The JSON error body clients receive."""
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body

    def headers(self) -> dict[str, str]:
        """Headers the error's response carries besides Content-Type."""
        return {}


class InvalidRequest(RunnerError):
    """The request is malformed or a field fails validation (400)."""

    status = 400
    code = "InvalidRequest"

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message, field)


class Unauthenticated(RunnerError):
    """No valid credentials or bearer token (401)."""

    status = 401
    code = "Unauthenticated"


class Forbidden(RunnerError):
    """The caller is authenticated but may not touch this resource (403)."""

    status = 403
    code = "Forbidden"


class NotFound(RunnerError):
    """The resource does not exist, or not in this account (404)."""

    status = 404
    code = "NotFound"


class Conflict(RunnerError):
    """The resource's state forbids the request, or a concurrent write won (409)."""

    status = 409
    code = "Conflict"


class Unprocessable(RunnerError):
    """The request is well formed but cannot be carried out as asked (422)."""

    status = 422
    code = "Unprocessable"


class IdempotencyKeyReused(Unprocessable):
    """An Idempotency-Key sent again with another request than the first (422)."""

    code = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyKeyInProgress(Conflict):
    """The first request of an Idempotency-Key is still being answered (409, with Retry-After)."""

    code = "IDEMPOTENCY_KEY_IN_PROGRESS"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class PayloadTooLarge(RunnerError):
    """The request body exceeds what the service stores (413)."""

    status = 413
    code = "PayloadTooLarge"


class TooManyRequests(RunnerError):
    """Too many tries: the caller must wait `retry_after` seconds (429, with Retry-After)."""

    status = 429
    code = "TooManyRequests"

    def __init__(self, message: str, field: str | None, retry_after: int) -> None:
        super().__init__(message, field)
        self.retry_after = max(1, int(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class AuthorizerDenied(Exception):
    """Raised by the token authorizer; API Gateway answers 401 for the message "Unauthorized"."""

    def __init__(self, reason: str) -> None:
        super().__init__("Unauthorized")
        self.reason = reason


def either(words: Sequence[str]) -> str:
    """Alternatives as a message names them: "a", "a or b", "a, b or c"."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
