"""Idempotency keys: a request sent again with the same `Idempotency-Key` gets the first answer.

`POST /jobs/{a}`, `POST .../start` and `POST .../restart` accept the header (1 to 255 printable
ASCII characters). The key is scoped to the account and the route (method, path template and
path parameters: the same key on two jobs' starts is two keys) and kept for 24 hours, in the
idempotency table, as one item:

- The first request claims the key with a conditional put (IN_PROGRESS, with the fingerprint of
  its query and body as canonical JSON), runs, and stores its answer (status, headers, body) on
  the item (DONE). 2xx, 3xx and 4xx answers are stored and replayed: a 4xx says something about
  the request, which the same request would get again. A 5xx (or a crash) releases the claim, so
  that a retry runs again.
- A request with the same key and the same fingerprint answers the stored answer, and creates
  nothing. If the first is still running (two requests at the same moment), it waits for it, up
  to WAIT_SECONDS, then answers 409 IDEMPOTENCY_KEY_IN_PROGRESS with Retry-After.
- The same key with another fingerprint answers 422 IDEMPOTENCY_KEY_REUSED.
- A claim whose request died without releasing it (its function timed out) is taken over by the
  next request with the same fingerprint after CLAIM_SECONDS (above the API function's timeout).
  Whatever the dead request had done before it died stays done.

DynamoDB's TTL removes items up to a couple of days late, so an item is also taken as absent
once its `expiresAt` has passed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, UpdateError

from chalicelib.platform.errors import IdempotencyKeyInProgress, IdempotencyKeyReused, InvalidRequest
from chalicelib.platform.models import IdempotencyRecord
from chalicelib.platform.storage import condition_failed

logger = logging.getLogger("runner.idempotency")

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
KEEP_SECONDS = 24 * 3600
# Longer than the API function's timeout (60 s, .chalice/config.json): a claim this old is dead.
CLAIM_SECONDS = 90
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.1
# DynamoDB items hold at most 400 KB; a larger (compressed) answer is not kept, and its claim released.
MAX_STORED_BODY = 350 * 1024
IN_PROGRESS, DONE = "IN_PROGRESS", "DONE"


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as it is stored and replayed."""

    status: int
    body: str
    body_is_json: bool
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def document(self) -> Any:
        """The body as the route returned it (a JSON document, or text)."""
        return json.loads(self.body) if self.body_is_json else self.body


@dataclass(frozen=True)
class Claim:
    """The right to answer one (account, route, key) first."""

    account_alias: str
    request_key: str
    claim_id: str


def parse_key(value: str | None) -> str | None:
    """The header's key; None without the header; InvalidRequest naming the header when it is malformed."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY_LENGTH or any(not 0x20 <= ord(ch) <= 0x7E for ch in value):
        raise InvalidRequest(HEADER, f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return value


def route_of(method: str, path: str, params: dict[str, str]) -> str:
    """The route a key is scoped to: method, path template and path parameters, as one line of JSON."""
    return json.dumps([method, path, sorted(params.items())], separators=(",", ":"))


def request_key(route: str, key: str) -> str:
    """The item's sort key: the hash of the route and the key (both can be long)."""
    return hashlib.sha256(json.dumps([route, key]).encode("utf-8")).hexdigest()


def fingerprint(query: dict | None, raw_body: bytes | None) -> str:
    """The hash of a request's query parameters and body, the body as canonical JSON when it is JSON."""
    body: Any
    text = raw_body or b""
    if not text.strip():
        body = None
    else:
        try:
            body = {"json": json.loads(text)}
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = {"raw": hashlib.sha256(text).hexdigest()}
    document = {"query": sorted((query or {}).items()), "body": body}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Idempotency:
    """Claims, answers and releases idempotency keys in the idempotency table."""

    def __init__(self, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 wait_seconds: float = WAIT_SECONDS) -> None:
        self._clock = clock
        self._sleep = sleep
        self._wait_seconds = wait_seconds

    def begin(self, account: str, route: str, key: str, request_fingerprint: str) -> Claim | Answer:
        """Claim the key, or answer the first request's answer (waiting for it while it runs).

        IdempotencyKeyReused when the key came with another request; IdempotencyKeyInProgress
        when the first request is still running after the wait.
        """
        item_key = request_key(route, key)
        deadline = time.monotonic() + self._wait_seconds
        while True:
            claim = self._claim(account, item_key, route, request_fingerprint)
            if claim is not None:
                return claim
            record = self._read(account, item_key)
            if record is not None:
                if record.fingerprint != request_fingerprint:
                    raise IdempotencyKeyReused(
                        f"this {HEADER} was used within 24 hours with another request; use a new key", HEADER)
                if record.state == DONE:
                    return Answer(int(record.status_code), zlib.decompress(record.body).decode("utf-8"),
                                  bool(record.body_is_json), json.loads(record.headers or "{}"))
            if time.monotonic() >= deadline:
                raise IdempotencyKeyInProgress(
                    f"the first request with this {HEADER} is still being answered; try again", HEADER)
            self._sleep(POLL_SECONDS)

    def _claim(self, account: str, item_key: str, route: str, request_fingerprint: str) -> Claim | None:
        now = self._clock()
        claim = Claim(account, item_key, uuid.uuid4().hex)
        record = IdempotencyRecord(account, item_key, route=route, fingerprint=request_fingerprint,
                                   state=IN_PROGRESS, claim_id=claim.claim_id, claimed_until=int(now) + CLAIM_SECONDS,
                                   created_time=int(now * 1000), expires_at=int(now) + KEEP_SECONDS)
        free = (IdempotencyRecord.request_key.does_not_exist()
                | (IdempotencyRecord.expires_at <= int(now))
                | ((IdempotencyRecord.state == IN_PROGRESS) & (IdempotencyRecord.claimed_until < int(now))
                   & (IdempotencyRecord.fingerprint == request_fingerprint)))
        try:
            record.save(condition=free)
        except PutError as exc:
            if condition_failed(exc):
                return None
            raise
        return claim

    def _read(self, account: str, item_key: str) -> IdempotencyRecord | None:
        try:
            record = IdempotencyRecord.get(account, item_key, consistent_read=True)
        except DoesNotExist:
            return None
        return None if int(record.expires_at) <= self._clock() else record

    def complete(self, claim: Claim, answer: Answer) -> None:
        """Store the answer of a claimed request, for the requests that repeat it."""
        body = zlib.compress(answer.body.encode("utf-8"))
        if len(body) > MAX_STORED_BODY:
            logger.warning("an answer of %d bytes is too large to keep for its %s; the key is released",
                           len(body), HEADER)
            self.release(claim)
            return
        record = IdempotencyRecord(claim.account_alias, claim.request_key)
        try:
            record.update(actions=[IdempotencyRecord.state.set(DONE), IdempotencyRecord.status_code.set(answer.status),
                                   IdempotencyRecord.headers.set(json.dumps(answer.headers)),
                                   IdempotencyRecord.body.set(body),
                                   IdempotencyRecord.body_is_json.set(1 if answer.body_is_json else 0)],
                          condition=IdempotencyRecord.claim_id == claim.claim_id)
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
            logger.warning("an %s claim was taken over before its answer was stored", HEADER)

    def release(self, claim: Claim) -> None:
        """Give the key up (the request failed on our side): a retry runs again."""
        try:
            IdempotencyRecord(claim.account_alias, claim.request_key).delete(
                condition=IdempotencyRecord.claim_id == claim.claim_id)
        except DeleteError as exc:
            if not condition_failed(exc):
                raise
