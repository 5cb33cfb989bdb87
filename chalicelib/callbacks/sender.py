"""Callbacks, the sending side: signed POSTs with retries, the webhook secret, the delivery log."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import re
import secrets as token_source
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib.platform import models
from chalicelib.executions import states
from chalicelib.callbacks.notices import Notifier, deliveries, event_notice, parse_callbacks, take_seqs, timestamp
from chalicelib.platform.config import Settings
from chalicelib.platform.errors import NotFound
from chalicelib.executions.service import render_event, render_execution
from chalicelib.jobs.service import now_ms
from chalicelib.platform.models import Account, Delivery, Execution, ExecutionEvent
from chalicelib.platform.sealing import Opener, Sealer
from chalicelib.platform.storage import condition_failed
from chalicelib.callbacks.targets import UnresolvedTarget, UnsafeTarget, check_target

logger = logging.getLogger("runner.webhooks")

MAX_DELAY_SECONDS = 900  # SQS's longest message delay
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
DELIVERY_RETENTION_DAYS = 30
def sign(secret: str, body: bytes) -> str:
    """The X-Runner-Signature value of a body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@dataclass
class Outcome:
    """What one POST did."""

    status_code: int | None
    error: str | None
    # Not sent: the URL names an address or port webhooks may not reach. Never retried.
    refused: bool = False


class WebhookSecrets:
    """Per-account HMAC keys, sealed by KMS in the account item; opened again only when they change."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self._kms = kms
        self._key_id = key_id
        self._opened: dict[str, tuple[str, str]] = {}  # account -> (sealed, secret)

    @staticmethod
    def _aad(account: str) -> str:
        return f"{account}/webhookSecret"

    def _store(self, account: str, condition: Any) -> str:
        secret = token_source.token_urlsafe(32)
        sealed = json.dumps(Sealer(self._kms, self._key_id, {"accountAlias": account}).seal(self._aad(account), secret))
        Account(account).update(actions=[Account.webhook_secret.set(sealed)], condition=condition)
        self._opened[account] = (sealed, secret)
        return secret

    def get(self, account: str) -> str:
        """The account's secret, made on first use."""
        models.bind()
        try:
            sealed = Account.get(account, consistent_read=True, attributes_to_get=["accountAlias", "webhookSecret"]).webhook_secret
        except DoesNotExist as exc:
            raise NotFound(f"account {account} does not exist") from exc
        if sealed is None:
            try:
                return self._store(account, Account.account_alias.exists() & Account.webhook_secret.does_not_exist())
            except UpdateError as exc:
                if not condition_failed(exc):
                    raise
                return self.get(account)  # made by a concurrent first use (or the account is gone: 404)
        cached = self._opened.get(account)
        if cached is not None and cached[0] == sealed:
            return cached[1]
        secret = Opener(self._kms, {"accountAlias": account}).open(self._aad(account), json.loads(sealed))
        self._opened[account] = (sealed, secret)
        return secret

    def rotate(self, account: str) -> str:
        """A new secret for the account; the old one signs nothing more."""
        models.bind()
        try:
            return self._store(account, Account.account_alias.exists())
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
            raise NotFound(f"account {account} does not exist") from exc


class Sender:
    """Handles the callback queue's messages: status changes become notices, deliveries are POSTed."""

    def __init__(self, settings: Settings, notifier: Notifier, sqs: Any, webhook_secrets: WebhookSecrets) -> None:
        self._settings = settings
        self._notifier = notifier
        self._sqs = sqs
        self._secrets = webhook_secrets
        self._http = urllib3.PoolManager(num_pools=32, maxsize=8, retries=False)

    def handle(self, message: dict) -> None:
        """One queue message: a reference to a status change, to stored events, or to one delivery."""
        models.bind()
        kind = next((key for key in ("statusChange", "events", "delivery") if isinstance(message.get(key), dict)), None)
        if kind is None:
            logger.error("ignoring an unknown callback message: %s", sorted(message)[:5])
            return
        reference = message[kind]
        execution = self._execution(reference)
        if execution is None:
            logger.warning("ignoring a callback message for an execution that is not stored")
            return
        if kind == "statusChange":
            notice = self._status_notice(execution, {**reference, "type": "status"})
            if notice is not None:
                self._notifier.send(deliveries(notice, parse_callbacks(execution)))
        elif kind == "events":
            self._notifier.send(self._event_deliveries(execution, reference))
        else:
            self._deliver(execution, reference)

    @staticmethod
    def _execution(reference: dict) -> Execution | None:
        job_id, execution_id = reference.get("jobId"), reference.get("executionId")
        if not isinstance(job_id, str) or not isinstance(execution_id, str) or not job_id or not execution_id:
            return None
        try:
            return Execution.get(job_id, execution_id, consistent_read=True)
        except DoesNotExist:
            return None

    @staticmethod
    def _seq(execution: Execution, seq: Any) -> int | None:
        """A notice seq the execution's counter has handed out, or None."""
        handed_out = int(execution.notify_seq or 0)
        return seq if isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq <= handed_out else None

    @staticmethod
    def _timestamp(value: Any) -> str:
        return value if isinstance(value, str) and TIMESTAMP.fullmatch(value) else timestamp()

    def _status_notice(self, execution: Execution, reference: dict) -> dict | None:
        """The notice of a status change, from the stored execution; None unless it is one it went through."""
        status, attempt, stored_attempt = reference.get("status"), reference.get("attempt"), int(execution.attempt)
        if not isinstance(attempt, int) or not 1 <= attempt <= stored_attempt or status not in states.ALLOWED_FROM:
            return None
        if attempt == stored_attempt and not states.passed_through(status, execution.status):
            return None
        if attempt < stored_attempt and status not in states.ACTIVE | states.RESTARTABLE:
            return None  # an earlier attempt ended in a status a restart starts from
        seq = self._seq(execution, reference.get("seq"))
        if seq is None:
            seq = take_seqs(execution.job_id, execution.execution_id, 1)
        notice = {"type": "status", "accountAlias": execution.account_alias, "jobId": execution.job_id,
                  "executionId": execution.execution_id, "attempt": attempt, "seq": seq, "status": status,
                  "event": None, "timestamp": self._timestamp(reference.get("timestamp"))}
        if status in states.FINAL and attempt == stored_attempt:
            document = render_execution(execution)
            notice["result"] = {"status": document["status"], "status_reason": document["status_reason"],
                                "timers": document["timers"], "failed_hosts": document["failed_hosts"],
                                "stats": json.loads(execution.stats) if execution.stats else {}}
        return notice

    def _event_notice(self, execution: Execution, event_seq: Any, seq: int, status: Any,
                      moment: Any = None) -> dict | None:
        """The notice of one stored event (as the events route shows it), or None."""
        if not isinstance(event_seq, int) or isinstance(event_seq, bool):
            return None
        try:
            item = ExecutionEvent.get(execution.execution_id, event_seq)
        except DoesNotExist:
            return None
        notice = event_notice(execution, seq, status if status in states.ACTIVE else states.RUNNING, render_event(item))
        notice["attempt"] = int(item.attempt)
        notice["timestamp"] = self._timestamp(moment or notice["timestamp"])
        return notice

    def _event_deliveries(self, execution: Execution, reference: dict) -> list[dict]:
        """The deliveries of stored events whose notice seqs the worker reserved."""
        event_seqs, first = reference.get("eventSeqs"), reference.get("firstSeq")
        if not isinstance(event_seqs, list) or self._seq(execution, first) is None:
            return []
        if self._seq(execution, first + len(event_seqs) - 1) is None:
            return []
        callbacks = parse_callbacks(execution)
        found: list[dict] = []
        for offset, event_seq in enumerate(event_seqs):
            notice = self._event_notice(execution, event_seq, first + offset, reference.get("status"))
            if notice is not None:
                found += deliveries(notice, callbacks)
        return found

    def rebuild(self, execution: Execution, delivery: dict) -> dict | None:
        """A delivery's whole content from the tables: its callback must be the execution's own."""
        url, level, reference = delivery.get("url"), delivery.get("level"), delivery.get("notice")
        if not isinstance(reference, dict) or not any(
                callback["url"] == url and callback["level"] == level for callback in parse_callbacks(execution)):
            return None
        seq = self._seq(execution, reference.get("seq"))
        if seq is None:
            return None
        if reference.get("type") == "event":
            notice = self._event_notice(execution, reference.get("eventSeq"), seq, reference.get("status"),
                                        reference.get("timestamp"))
        else:
            notice = self._status_notice(execution, {**reference, "seq": seq})
        if notice is None:
            return None
        made = deliveries(notice, [{"url": url, "level": level}])
        if not made:
            return None  # the level does not want this notice
        tries = delivery.get("tries")
        first_try = delivery.get("firstTry")
        return {**made[0]["delivery"], **notice, "tries": tries if isinstance(tries, int) else 0,
                "firstTry": first_try if isinstance(first_try, int) else None}

    def _gone(self, execution_id: str, url: str) -> bool:
        try:
            Delivery.get(execution_id, self._gone_key(url), consistent_read=True)
            return True
        except DoesNotExist:
            return False

    @staticmethod
    def _gone_key(url: str) -> str:
        return "gone#" + hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]

    def _deliver(self, execution: Execution, reference: dict) -> None:
        delivery = self.rebuild(execution, reference)
        if delivery is None:
            logger.warning("ignoring a delivery that the stored execution %s does not back", execution.execution_id)
            return
        execution_id, url = delivery["executionId"], delivery["url"]
        tries = delivery["tries"] + 1
        first_try = delivery["firstTry"] or now_ms()
        record = Delivery(execution_id, delivery["deliveryId"], url=url, level=delivery["level"], seq=delivery["seq"],
                          type=delivery["type"], tries=tries, first_try_time=first_try, last_try_time=now_ms(),
                          expires_at=int(time.time()) + DELIVERY_RETENTION_DAYS * 86400, state="PENDING")
        if self._gone(execution_id, url):
            record.state, record.last_error = "SKIPPED", "the URL answered 410 Gone for this execution"
            record.save()
            return
        body = json.dumps(self.payload(delivery), separators=(",", ":"), sort_keys=True).encode("utf-8")
        outcome = self._post(url, body, delivery)
        record.status_code, record.last_error = outcome.status_code, outcome.error
        again = {**reference, "tries": tries, "firstTry": first_try}
        if outcome.status_code is not None and 200 <= outcome.status_code < 300:
            record.state = "DELIVERED"
        elif outcome.refused:
            # Trying again would only knock again at the same closed door: given up now, not dead-lettered.
            record.state = "FAILED"
            logger.warning("delivery %s of execution %s not sent: %s", delivery["deliveryId"], execution_id,
                           outcome.error)
        elif outcome.status_code == 410:
            record.state = "GONE"
            Delivery(execution_id, self._gone_key(url), url=url, state="GONE", tries=0,
                     expires_at=record.expires_at).save()
        elif (now_ms() - first_try) / 1000 < self._settings.callback_retry_window_seconds:
            record.state = "RETRYING"
            self._retry(again, tries)
        else:
            record.state = "FAILED"
            self._sqs.send_message(QueueUrl=self._settings.callback_dead_letter_queue_url,
                                   MessageBody=json.dumps({"delivery": again}))
        record.save()

    @staticmethod
    def payload(delivery: dict) -> dict:
        """The JSON body a receiver gets."""
        body = {key: delivery.get(key) for key in ("deliveryId", "accountAlias", "jobId", "executionId", "attempt",
                                                   "seq", "level", "type", "status", "event", "timestamp")}
        if "result" in delivery:
            body["result"] = delivery["result"]
        return body

    def _retry(self, delivery: dict, tries: int) -> None:
        base = self._settings.callback_retry_base_seconds * 2 ** (tries - 1)
        delay = int(min(MAX_DELAY_SECONDS, base) * random.uniform(0.5, 1.0)) or 1  # noqa: S311 - jitter
        self._sqs.send_message(QueueUrl=self._settings.callback_queue_url, DelaySeconds=delay,
                               MessageBody=json.dumps({"delivery": delivery}))

    def _post(self, url: str, body: bytes, delivery: dict) -> Outcome:
        try:
            target = check_target(url, self._settings.webhook_rules)
        except UnresolvedTarget as exc:
            return Outcome(None, str(exc))  # perhaps for a moment: tried again
        except UnsafeTarget as exc:
            return Outcome(None, f"refused: {exc}", refused=True)
        parts = urlsplit(url)
        headers = {"Content-Type": "application/json", "User-Agent": "Runner-Webhooks/1",
                   "Host": parts.netloc.rsplit("@", 1)[-1], "X-Runner-Delivery": delivery["deliveryId"],
                   "X-Runner-Signature": sign(self._secrets.get(delivery["accountAlias"]), body)}
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        timeout = urllib3.Timeout(total=self._settings.callback_timeout_seconds)
        try:
            # To the address checked, never the name again (DNS rebinding); TLS still verifies the name.
            if target.scheme == "https":
                pool = self._http.connection_from_host(target.address, target.port, "https", pool_kwargs={
                    "server_hostname": target.hostname, "assert_hostname": target.hostname})
            else:
                pool = self._http.connection_from_host(target.address, target.port, "http")
            answer = pool.urlopen("POST", path, body=body, headers=headers, timeout=timeout, redirect=False,
                                  retries=False, preload_content=True)
        except urllib3.exceptions.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])
        error = None if 200 <= answer.status < 300 else f"HTTP {answer.status}"
        return Outcome(answer.status, error)


def list_deliveries(execution_id: str) -> list[dict]:
    """The delivery log of an execution, in seq order."""
    models.bind()
    found = []
    for item in Delivery.query(execution_id, consistent_read=True):
        if item.delivery_id.startswith("gone#"):
            continue
        found.append({"deliveryId": item.delivery_id, "url": item.url, "level": item.level, "seq": _int(item.seq),
                      "type": item.type, "state": item.state, "statusCode": _int(item.status_code),
                      "tries": int(item.tries or 0), "lastError": item.last_error,
                      "firstTryTime": _int(item.first_try_time), "lastTryTime": _int(item.last_try_time)})
    return sorted(found, key=lambda item: (item["seq"] or 0, item["url"], item["level"] or ""))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
