"""Account run slots: at most `limit` attempts of an account run at once, the others wait, first in first out.

The execution workflow's `TakeSlot` state sends a `take` message carrying its task token to the
slot queue and parks; its `ReleaseSlot` state sends `leave`. The slot queue is FIFO and its
message group is the account, so the slot keeper (`SlotKeeper`, the `slot_keeper` function)
handles one account's messages one at a time and in the order they were sent: it decides without
locks, and one account's queue never holds up another's.

- `take`: the attempt joins the account's waiting list, behind every earlier one.
- `leave`: the attempt gives its slot back, or leaves the waiting list; a waiter's task then ends
  with `granted: false` and its workflow ends (a stop, a kill or the TTL of a waiting execution).
- after both, a fill: while fewer than the account's limit hold a slot, the oldest waiter becomes
  a holder and its task ends with `granted: true`. A release thus hands its slot straight to the
  oldest waiter. `fill` alone is sent by the reconciler.

A waiting attempt costs its workflow one state however long it waits, and nothing polls. Every
message is idempotent (a redelivered `take` finds its ticket or its holding, a second `leave`
finds nothing), and every write is made before the task it concerns is told, so a keeper that
stops in between leaves a state the next message completes.

Slots never leak: a workflow that ends without its `ReleaseSlot` (failed, timed out, aborted) is
released by `release_ended_workflow`, which an EventBridge rule on the state machine's status
changes calls on AWS (local mode's equivalent watches the emulator); `SlotReconciler` releases
whatever a workflow that no longer runs still holds or waits for.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from botocore.exceptions import ClientError
from pynamodb.exceptions import DeleteError, DoesNotExist, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.executions.tasks import end_task
from chalicelib.platform import models
from chalicelib.platform.models import Account, RunSlot
from chalicelib.platform.storage import condition_failed, failed_conditions

logger = logging.getLogger("runner.slots")

HOLDER = "holder#"
WAITER = "waiter#"
TICKET = "ticket#"
NEXT = "next"
SEQ_DIGITS = 20  # zero-padded: the sort key orders waiters as their seqs
OPERATIONS = ("take", "leave", "fill")
# How long the keeper trusts an account's limit it has read (each read is a call on every message).
LIMIT_CACHE_SECONDS = 10
# How a workflow that never reached its ReleaseSlot ended (EventBridge's `status`).
UNFINISHED = ("FAILED", "TIMED_OUT", "ABORTED")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class SlotMessage:
    """One message of the slot queue."""

    op: str
    account_alias: str
    job_id: str = ""
    execution_id: str = ""
    attempt: int = 0
    task_token: str = ""

    @classmethod
    def parse(cls, body: str) -> "SlotMessage":
        data = json.loads(body)
        op = data.get("op")
        if op not in OPERATIONS:
            raise ValueError(f"unknown slot operation {op!r}")
        message = cls(op, str(data["accountAlias"]), str(data.get("jobId", "")), str(data.get("executionId", "")),
                      int(data.get("attempt", 0)), str(data.get("taskToken", "")))
        if op != "fill" and not (message.job_id and message.execution_id and message.attempt > 0):
            raise ValueError(f"a {op} names no attempt")
        if op == "take" and not message.task_token:
            raise ValueError("a take carries no task token")
        return message

    @property
    def member(self) -> str:
        return f"{self.execution_id}#{self.attempt}"


def account_limit(account: str, default: int) -> int:
    """How many attempts of the account may hold a slot at once."""
    try:
        limit = Account.get(account, attributes_to_get=["maxConcurrent"]).max_concurrent
    except DoesNotExist:
        limit = None
    return int(limit or default)


class SlotKeeper:
    """Decides every take, leave and fill; told one account's messages one at a time, in order."""

    def __init__(self, stepfunctions: Any, limit_of: Callable[[str], int], clock: Callable[[], float] = time.monotonic) -> None:
        self._sfn = stepfunctions
        self._limit_of = limit_of
        self._clock = clock
        self._limits: dict[str, tuple[int, float]] = {}

    def _limit(self, account: str) -> int:
        """The account's limit, read at most every LIMIT_CACHE_SECONDS (a change applies within that)."""
        cached = self._limits.get(account)
        now = self._clock()
        if cached is None or cached[1] <= now:
            cached = (self._limit_of(account), now + LIMIT_CACHE_SECONDS)
            self._limits[account] = cached
        return cached[0]

    def handle(self, message: SlotMessage) -> None:
        if message.op == "take":
            self._join(message)
        elif message.op == "leave":
            self._leave(message)
        self._fill(message.account_alias)

    # --- the entries -----------------------------------------------------------------------------

    @staticmethod
    def _entry(account: str, entry: str) -> RunSlot | None:
        try:
            return RunSlot.get(account, entry, consistent_read=True)
        except DoesNotExist:
            return None

    @staticmethod
    def _first(account: str, prefix: str, limit: int | None = None) -> list[RunSlot]:
        return list(RunSlot.query(account, RunSlot.entry.startswith(prefix), consistent_read=True, limit=limit))

    def _join(self, message: SlotMessage) -> None:
        account, member = message.account_alias, message.member
        counter = self._entry(account, NEXT)
        seq = int(counter.seq) if counter else 0
        waiter_key = f"{WAITER}{seq:0{SEQ_DIGITS}d}"
        waiter = RunSlot(account, waiter_key, job_id=message.job_id, execution_id=message.execution_id,
                         attempt=message.attempt, task_token=message.task_token, seq=seq, since=now_ms())
        ticket = RunSlot(account, TICKET + member, seq=seq)
        # A redelivered take finds its holding or its ticket, and changes nothing. The other
        # conditions guard against a second keeper of the same account, which the queue rules out:
        # a failed one sends the message back, to be decided again.
        try:
            with TransactWrite(connection=models.connection()) as transaction:
                transaction.condition_check(RunSlot, account, HOLDER + member, condition=RunSlot.entry.does_not_exist())
                transaction.save(ticket, condition=RunSlot.entry.does_not_exist())
                transaction.save(waiter, condition=RunSlot.entry.does_not_exist())
                transaction.save(RunSlot(account, NEXT, seq=seq + 1),
                                 condition=(RunSlot.seq == seq) if counter else RunSlot.entry.does_not_exist())
        except TransactWriteError as exc:
            if failed_conditions(exc) & {0, 1}:
                return
            raise

    def _leave(self, message: SlotMessage) -> None:
        account, member = message.account_alias, message.member
        try:  # the common case, a holder giving its slot back, in one call
            RunSlot(account, HOLDER + member).delete(condition=RunSlot.entry.exists())
            return
        except DeleteError as exc:
            if not condition_failed(exc):
                raise
        ticket = self._entry(account, TICKET + member)
        if ticket is not None:
            waiter = self._entry(account, f"{WAITER}{int(ticket.seq):0{SEQ_DIGITS}d}")
            if waiter is not None and waiter.task_token:
                # Told first: a keeper stopped after it finds the ticket again, and tells again.
                end_task(self._sfn, waiter.task_token, {"granted": False})
            with TransactWrite(connection=models.connection()) as transaction:
                if waiter is not None:
                    transaction.delete(waiter)
                transaction.delete(ticket)

    def _fill(self, account: str) -> None:
        holders = self._first(account, HOLDER)
        held = sum(1 for holder in holders if holder.granted or self._tell(holder))
        limit = self._limit(account)
        while held < limit:
            oldest = self._first(account, WAITER, limit=1)
            if not oldest:
                return
            waiter = oldest[0]
            holder = RunSlot(account, f"{HOLDER}{waiter.execution_id}#{int(waiter.attempt)}", job_id=waiter.job_id,
                             execution_id=waiter.execution_id, attempt=waiter.attempt, task_token=waiter.task_token,
                             granted=False, since=now_ms())
            with TransactWrite(connection=models.connection()) as transaction:
                transaction.save(holder)
                transaction.delete(waiter)
                transaction.delete(RunSlot(account, f"{TICKET}{waiter.execution_id}#{int(waiter.attempt)}"))
            if self._tell(holder):
                held += 1

    def _tell(self, holder: RunSlot) -> bool:
        """End the holder's TakeSlot task with its grant; False (and the holding gone) when its workflow is."""
        if end_task(self._sfn, holder.task_token, {"granted": True}):
            holder.update(actions=[RunSlot.granted.set(True), RunSlot.task_token.remove()])
            return True
        logger.info("the workflow of %s attempt %s ended while waiting: slot kept for the next",
                    holder.execution_id, holder.attempt)
        holder.delete()
        return False


class SlotQueue:
    """Sends `leave` and `fill` to the slot keeper from our code (the workflows send their own)."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    def _send(self, account: str, body: dict) -> None:
        self._sqs.send_message(QueueUrl=self._queue_url, MessageGroupId=account,
                               MessageBody=json.dumps({"accountAlias": account, **body}, sort_keys=True))

    def leave(self, account: str, job_id: str, execution_id: str, attempt: int) -> None:
        self._send(account, {"op": "leave", "jobId": job_id, "executionId": execution_id, "attempt": int(attempt)})

    def fill(self, account: str) -> None:
        # Unique: the queue drops a body it has seen in the last five minutes.
        self._send(account, {"op": "fill", "nonce": uuid.uuid4().hex})


def release_ended_workflow(event: dict, state_machine_arn: str, queue: SlotQueue) -> bool:
    """An execution workflow ended without its ReleaseSlot: give back what its attempt holds or waits for.

    `event` is EventBridge's "Step Functions Execution Status Change". True when a leave was sent.
    """
    detail = event.get("detail") or {}
    if detail.get("stateMachineArn") != state_machine_arn or detail.get("status") not in UNFINISHED:
        return False
    try:
        data = json.loads(detail.get("input") or "")
        account, job_id, execution_id = data["accountAlias"], data["jobId"], data["executionId"]
        attempt = int(data["attempt"])
    except (ValueError, KeyError, TypeError):
        logger.error("workflow %s ended %s with an input naming no attempt", detail.get("executionArn"),
                     detail.get("status"))
        return False
    logger.info("workflow of %s attempt %d ended %s: its slot is released", execution_id, attempt, detail["status"])
    queue.leave(account, job_id, execution_id, attempt)
    return True


class SlotReconciler:
    """Repairs the slots from the workflows: what a workflow that no longer runs holds or waits for is released."""

    def __init__(self, stepfunctions: Any, state_machine_arn: str, queue: SlotQueue) -> None:
        self._sfn = stepfunctions
        # An attempt's workflow is named <executionId>-<attempt> (ExecutionService._dispatch).
        self._executions = state_machine_arn.replace(":stateMachine:", ":execution:", 1)
        self._queue = queue

    def run(self) -> dict:
        released, waiting = 0, set()
        for entry in RunSlot.scan(RunSlot.entry.startswith(HOLDER) | RunSlot.entry.startswith(WAITER)):
            if entry.entry.startswith(WAITER):
                waiting.add(entry.account_alias)
            if not self._running(entry.execution_id, int(entry.attempt)):
                self._queue.leave(entry.account_alias, entry.job_id, entry.execution_id, int(entry.attempt))
                released += 1
        for account in waiting:  # a waiter with a free slot (a limit raised, a keeper stopped mid-way)
            self._queue.fill(account)
        if released:
            logger.warning("released %d run slots of workflows that had ended", released)
        return {"released": released, "filled": len(waiting)}

    def _running(self, execution_id: str, attempt: int) -> bool:
        try:
            return self._sfn.describe_execution(
                executionArn=f"{self._executions}:{execution_id}-{attempt}")["status"] == "RUNNING"
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
                return False
            raise
