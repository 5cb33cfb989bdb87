"""Callbacks, the producing side: notices of events and status changes, queued for the sender.

A notice is one fact about an execution (an ansible-runner event, or a status change) with a
`seq` drawn from the execution's own counter, so a receiver can order and de-duplicate. Each
notice becomes one delivery per callback of the job whose level wants it; deliveries travel on
the callback queue to the sender (chalicelib/callbacks/sender.py). Producers only enqueue: a
slow or dead receiver never slows a run.

Every message on the callback queue is a reference (which execution, which attempt, which
status, which stored event), never content: the worker that queues them runs hostile playbooks,
so the sender rebuilds each notice from the tables, and takes the account, the callback URLs and
their levels from the stored execution alone.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

from pynamodb.exceptions import UpdateError

from chalicelib.executions import states
from chalicelib.platform.models import Execution

logger = logging.getLogger("runner.callbacks")

DEBUG, ERROR, RESULT = "DEBUG", "ERROR", "RESULT"
ERROR_EVENTS = frozenset({"runner_on_failed", "runner_on_unreachable", "runner_item_on_failed",
                          "runner_on_async_failed"})
ERROR_STATUSES = frozenset({states.FAILURE, states.INIT_FAILURE, states.KILLED})
DELIVERY_NAMESPACE = uuid.UUID("0b0c5b0e-4a53-4c1b-9a0e-2f1e1c6d9b77")
SQS_BATCH = 10


def timestamp(epoch_ms: int | None = None) -> str:
    """UTC ISO 8601 with milliseconds and a Z."""
    moment = datetime.fromtimestamp((epoch_ms if epoch_ms is not None else time.time() * 1000) / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def wanted(level: str, notice: dict) -> bool:
    """Whether a callback of `level` receives this notice."""
    if level == DEBUG:
        return True
    if notice["type"] == "status":
        if level == ERROR:
            return notice["status"] in ERROR_STATUSES
        return notice["status"] in states.FINAL
    return level == ERROR and (notice.get("event") or {}).get("event") in ERROR_EVENTS


def reference(notice: dict) -> dict:
    """What a delivery message carries of its notice: enough to rebuild it from the tables."""
    found = {key: notice[key] for key in ("type", "attempt", "seq", "status", "timestamp")}
    if notice["type"] == "event":
        found["eventSeq"] = notice["event"]["seq"]
    return found


def deliveries(notice: dict, callbacks: Iterable[dict]) -> list[dict]:
    """The delivery messages of a notice: one per callback that wants it."""
    found = []
    for callback in callbacks:
        level = callback["level"]
        if wanted(level, notice):
            delivery_id = str(uuid.uuid5(DELIVERY_NAMESPACE, f"{notice['executionId']}/{notice['seq']}/{level}/"
                                                             f"{callback['url']}"))
            found.append({"delivery": {"jobId": notice["jobId"], "executionId": notice["executionId"],
                                       "deliveryId": delivery_id, "url": callback["url"], "level": level,
                                       "tries": 0, "notice": reference(notice)}})
    return found


def event_notice(execution: Execution, seq: int, status: str, event: dict) -> dict:
    """A notice of one ansible-runner event (already trimmed and masked, as the events route shows it)."""
    return {"type": "event", "accountAlias": execution.account_alias, "jobId": execution.job_id,
            "executionId": execution.execution_id, "attempt": int(execution.attempt), "seq": seq,
            "status": status, "event": event, "timestamp": timestamp()}


def status_check(execution: Execution, status: str) -> dict:
    """A status change for the sender to notice (it adds the result; it takes a seq if none is given)."""
    return {"statusChange": {"accountAlias": execution.account_alias, "jobId": execution.job_id,
                             "executionId": execution.execution_id, "attempt": int(execution.attempt),
                             "status": status, "timestamp": timestamp()}}


def take_seqs(job_id: str, execution_id: str, count: int) -> int:
    """Reserve `count` callback seqs of an execution; answers the first."""
    execution = Execution(job_id, execution_id)
    execution.update(actions=[Execution.notify_seq.add(count)], condition=Execution.execution_id.exists())
    return int(execution.notify_seq) - count + 1


def parse_callbacks(execution: Execution) -> list[dict]:
    return json.loads(execution.callbacks) if execution.callbacks else []


class Notifier:
    """Puts notices and deliveries on the callback queue (a no-op without a queue)."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    def send(self, messages: list[dict]) -> None:
        """Queue messages, ten per call; a failure is logged, never raised into a run."""
        if not self._queue_url or not messages:
            return
        for start in range(0, len(messages), SQS_BATCH):
            batch = messages[start:start + SQS_BATCH]
            try:
                answer = self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=[
                    {"Id": str(index), "MessageBody": json.dumps(message, default=str)}
                    for index, message in enumerate(batch)])
                for failed in answer.get("Failed", []):
                    logger.error("could not queue a callback message: %s", failed.get("Message"))
            except Exception:  # noqa: BLE001 - callbacks must never fail the run or the request
                logger.exception("could not queue %d callback messages", len(batch))

    def status_changed(self, execution: Execution, status: str) -> None:
        """Notice a status change of an execution whose job has callbacks (its seq taken now, in order)."""
        if not parse_callbacks(execution):
            return
        message = status_check(execution, status)
        try:
            message["statusChange"]["seq"] = take_seqs(execution.job_id, execution.execution_id, 1)
        except UpdateError:
            logger.exception("could not reserve a callback seq for execution %s", execution.execution_id)
        self.send([message])

    def events(self, execution: Execution, status: str, event_seqs: list[int]) -> None:
        """Notice stored ansible-runner events, in order (their notice seqs are reserved together)."""
        if not parse_callbacks(execution) or not event_seqs:
            return
        try:
            first = take_seqs(execution.job_id, execution.execution_id, len(event_seqs))
        except UpdateError:
            logger.exception("could not reserve callback seqs for execution %s", execution.execution_id)
            return
        self.send([{"events": {"jobId": execution.job_id, "executionId": execution.execution_id,
                               "attempt": int(execution.attempt), "status": status,
                               "eventSeqs": [int(seq) for seq in event_seqs], "firstSeq": first}}])
