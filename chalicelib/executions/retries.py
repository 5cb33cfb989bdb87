"""Automatic retries: an attempt that ended FAILURE runs again, as a manual restart would.

A job's `retry` (`{"attempts": 1-5, "delaySeconds": 0-3600, "onlyFailedHosts": true}`) is copied
onto each execution when it starts. Where a FAILURE is noticed: every attempt's execution
workflow ends in its `Done` state whatever ended the attempt (the worker's result, or
`RecordWorkerLost`); when the execution had retries left at dispatch, `Done` puts
`{"attemptEnded": ...}` on the retry queue, whose consumer is this module (`execution_retry` in
app.py). So the worker's FAILURE and the workflow's "worker lost" reach one place.

For an attempt that ended FAILURE with retries left, `attempt_ended` begins the next attempt
through the same write as a manual restart (ExecutionService._next_attempt: attempt + 1, the
failed hosts when `onlyFailedHosts` and some failed, else the attempt's hosts, the first
attempt's commit, a timer of its own once a worker claims it), PENDING with a `status_reason`
naming the retry, and starts its TTL now: the wait counts against it. Its workflow starts when
the delay is over. The delay waits on this queue: a message with `DelaySeconds` (SQS allows at
most 900), sent again until `dueTime` when the delay is longer, so a waiting retry costs no state
transition and holds no run slot. Nothing else waits for it:

- a stop or a kill meanwhile ends the PENDING execution at once (STOPPED, KILLED), and its TTL
  (STOPPED) too; the due message then finds it ended and does nothing;
- every write is conditional on the attempt and its status, and the attempt's workflow is named
  `{executionId}-{attempt}`: a message delivered twice begins one retry and starts one workflow.
  A delivery that finds the retry begun but not yet started (its sender died in between) sends
  the due message again.
"""
from __future__ import annotations

import json
import logging
import math
import time
from datetime import datetime, timezone
from typing import Any, Callable

from pynamodb.exceptions import DoesNotExist

from chalicelib.executions import states
from chalicelib.executions.service import ExecutionService, StatusRaced
from chalicelib.jobs.service import JobService
from chalicelib.platform import models
from chalicelib.platform.errors import NotFound
from chalicelib.platform.models import Execution

logger = logging.getLogger("runner.executions")

MAX_DELAY_SECONDS = 900  # SQS's longest message delay

RETRYING = "retrying"  # the next attempt began (and started, or waits for its delay)
WAITING = "waiting"  # a due message was (re)sent for a retry that waits
STARTED = "started"  # a retry's delay was over: its workflow started
NOT_RETRIED = "not retried"  # the attempt did not fail, or has no retry left
OVER = "over"  # the execution moved on (stopped, killed, restarted, gone)
UNREAD = object()  # the job's TTL, not read yet
GONE = object()  # the job's TTL, of a job deleted since


def now_ms() -> int:
    return int(time.time() * 1000)


def _instant(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_reason(number: int, attempts: int, delay_seconds: int, due_ms: int, attempt: int,
                 previous: str | None) -> str:
    """The status_reason of an execution while its retry waits."""
    when = f" in {delay_seconds} s (at {_instant(due_ms)})" if delay_seconds else ""
    cause = f" ({previous})" if previous else ""
    return f"retry {number} of {attempts}{when}: attempt {attempt} ended FAILURE{cause}"


class Retries:
    """The retry queue's consumer: begins retries of failed attempts and starts them when due."""

    def __init__(self, executions: ExecutionService, jobs: JobService, sqs: Any, queue_url: str,
                 clock: Callable[[], int] = now_ms) -> None:
        self._executions = executions
        self._jobs = jobs
        self._sqs = sqs
        self._queue_url = queue_url
        self._clock = clock

    def handle(self, message: dict) -> str:
        """One message of the retry queue; raises (the message comes back) only for a fault."""
        models.bind()
        for kind, handler in (("attemptEnded", self.attempt_ended), ("retryDue", self.retry_due)):
            reference = message.get(kind)
            if isinstance(reference, dict):
                try:
                    job_id, execution_id = str(reference["jobId"]), str(reference["executionId"])
                    attempt = int(reference["attempt"])
                except (KeyError, TypeError, ValueError):
                    break
                return handler(job_id, execution_id, attempt)
        logger.error("ignoring a malformed retry message: %s", sorted(message)[:5])
        return OVER

    @staticmethod
    def _execution(job_id: str, execution_id: str) -> Execution | None:
        try:
            return Execution.get(job_id, execution_id, consistent_read=True)
        except DoesNotExist:
            return None

    def _ttl_minutes(self, execution: Execution) -> Any:
        """The job's executionTtl (None: the default); GONE when the job is gone."""
        try:
            job = self._jobs.load(execution.account_alias, execution.job_id)
        except NotFound:
            return GONE
        return json.loads(job.spec).get("executionTtl")

    def attempt_ended(self, job_id: str, execution_id: str, attempt: int) -> str:
        """Attempt `attempt` is over: retry it if it ended FAILURE and the execution has retries left."""
        execution = self._execution(job_id, execution_id)
        if execution is None:
            return OVER
        if (int(execution.attempt) == attempt + 1 and execution.status == states.PENDING
                and execution.retry_at is not None):
            return self._wait(execution)  # a second delivery: the retry began, make sure it starts
        if int(execution.attempt) != attempt or execution.status != states.FAILURE or not execution.retry_policy:
            return NOT_RETRIED
        policy = json.loads(execution.retry_policy)
        done = int(execution.retries or 0)
        if done >= int(policy["attempts"]):
            return NOT_RETRIED
        ttl_minutes = self._ttl_minutes(execution)
        if ttl_minutes is GONE:
            logger.info("execution %s: its job is gone, no retry", execution_id)
            return OVER
        failed = list(execution.failed_hosts or [])
        hosts = failed if policy.get("onlyFailedHosts", True) and failed else list(execution.target_hosts or [])
        delay = int(policy.get("delaySeconds") or 0)
        due = self._clock() + delay * 1000
        reason = retry_reason(done + 1, int(policy["attempts"]), delay, due, attempt, execution.status_reason)
        try:
            self._executions.retry(execution, hosts, reason, due, ttl_minutes)
        except StatusRaced:
            logger.info("execution %s attempt %d moved on before its retry began", execution_id, attempt)
            return OVER
        logger.info("execution %s: %s", execution_id, reason)
        self._wait(execution, ttl_minutes)
        return RETRYING

    def retry_due(self, job_id: str, execution_id: str, attempt: int) -> str:
        """A waiting retry's delay may be over: start its workflow, or wait on."""
        execution = self._execution(job_id, execution_id)
        if (execution is None or int(execution.attempt) != attempt or execution.status != states.PENDING
                or execution.retry_at is None):
            return OVER
        return self._wait(execution)

    def _wait(self, execution: Execution, ttl_minutes: Any = UNREAD) -> str:
        """Start the waiting retry's workflow if it is due, else send the due message again."""
        remaining_ms = int(execution.retry_at) - self._clock()
        if remaining_ms > 0:
            delay = min(MAX_DELAY_SECONDS, math.ceil(remaining_ms / 1000))
            self._sqs.send_message(QueueUrl=self._queue_url, DelaySeconds=delay, MessageBody=json.dumps(
                {"retryDue": {"jobId": execution.job_id, "executionId": execution.execution_id,
                              "attempt": int(execution.attempt)}}))
            return WAITING
        if ttl_minutes is UNREAD:
            ttl_minutes = self._ttl_minutes(execution)
        if ttl_minutes is GONE:
            logger.info("execution %s: its job is gone, its retry does not start", execution.execution_id)
            return OVER
        self._executions.dispatch_retry(execution, ttl_minutes)
        return STARTED
