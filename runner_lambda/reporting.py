"""What the worker tells the world: status changes, events, heartbeats, the attempt's result."""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib.executions import states
from chalicelib.executions.tasks import end_task, token_gone
from chalicelib.executions.logtext import attempt_header, byte_length, event_text
from chalicelib.platform.models import Execution, ExecutionEvent, Timer
from chalicelib.platform.storage import condition_failed
from runner_lambda.masking import Masker

logger = logging.getLogger("runner.worker")

SEQ_PER_ATTEMPT = 1_000_000
MAX_STDOUT = 32 * 1024
MAX_DATA = 16 * 1024
EVENT_DATA_KEYS = ("playbook", "play", "task", "task_action", "task_args", "host", "remote_addr", "res",
                   "duration", "start", "end", "changed", "ignore_errors", "role", "task_path", "stats")
# ansible-core warns about any strategy plugin outside ansible.builtin; ours is an implementation
# detail (graceful stop) that users' logs need not carry.
OWN_PLUGIN_WARNING = "strategy plugins not included in ansible.builtin"


def now_ms() -> int:
    """Epoch milliseconds."""
    return int(time.time() * 1000)


def _is_condition_failure(exc: UpdateError) -> bool:
    return condition_failed(exc)


def claim(job_id: str, execution_id: str, attempt: int, worker: str) -> Execution | None:
    """PENDING -> INITIALIZING for this attempt; None when another delivery already claimed it."""
    execution = Execution(job_id, execution_id)
    try:
        execution.update(
            actions=[Execution.status.set(states.INITIALIZING),
                     Execution.timers.set(Execution.timers.append([Timer(start=now_ms(), end=None)])),
                     # A retry's reason ("retry 1 of 2 in 30 s ...") said why it waited; it runs now.
                     Execution.status_reason.remove(), Execution.retry_at.remove(),
                     Execution.updated_time.set(now_ms())],
            condition=states.transition_condition(Execution, states.INITIALIZING, attempt=attempt))
    except UpdateError as exc:
        if _is_condition_failure(exc):
            logger.info("execution %s attempt %d is not PENDING: duplicate delivery, nothing to run",
                        execution_id, attempt)
            return None
        raise
    logger.info("worker %s claimed execution %s attempt %d", worker, execution_id, attempt)
    return execution


def run_token_of(job_id: str, execution_id: str, attempt: int) -> str | None:
    """The Run task token stored for this attempt; None when not handed over (yet), or the row has moved on."""
    try:
        current = Execution.get(job_id, execution_id, consistent_read=True, attributes_to_get=["attempt", "runToken"])
    except DoesNotExist:
        return None
    return current.run_token if int(current.attempt) == attempt else None


def mark_running(execution: Execution, repository_log: dict | None, commit: str | None) -> bool:
    """INITIALIZING -> RUNNING, recording the commit; False if the execution moved on meanwhile."""
    actions = [Execution.status.set(states.RUNNING), Execution.updated_time.set(now_ms())]
    if repository_log is not None:
        actions.append(Execution.repository_log.set(json.dumps(repository_log)))
    if commit and not execution.pinned_commit:
        actions.append(Execution.pinned_commit.set(commit))
    try:
        execution.update(actions=actions, condition=states.transition_condition(
            Execution, states.RUNNING, attempt=int(execution.attempt)))
    except UpdateError as exc:
        if _is_condition_failure(exc):
            return False
        raise
    return True


KEEP = object()  # finish(reason=KEEP): keep the reason already recorded (who stopped or killed it)


def finish(execution: Execution, status: str, reason: object = None, failed_hosts: list[str] | None = None,
           stats: dict | None = None, rc: int | None = None, repository_log: dict | None = None) -> bool:
    """Record the attempt's final status; False when it already ended another way (late result)."""
    timers = list(execution.timers or [])
    if timers:
        timers[-1] = Timer(start=timers[-1].start, end=now_ms())
    # The run token stays: this write's answer (the row as written) is how the worker learns a
    # token handed over meanwhile (chalicelib/executions/handoff.py).
    actions = [Execution.status.set(status), Execution.timers.set(timers),
               Execution.failed_hosts.set(sorted(failed_hosts or [])), Execution.updated_time.set(now_ms())]
    if reason is not KEEP:
        actions.append(Execution.status_reason.set(reason) if reason else Execution.status_reason.remove())
    if stats is not None:
        actions.append(Execution.stats.set(json.dumps(stats)))
    if rc is not None:
        actions.append(Execution.rc.set(rc))
    if repository_log is not None:
        actions.append(Execution.repository_log.set(json.dumps(repository_log)))
    try:
        execution.update(actions=actions, condition=states.transition_condition(
            Execution, status, attempt=int(execution.attempt)))
    except UpdateError as exc:
        if _is_condition_failure(exc):
            logger.warning("execution %s attempt %s already ended; result %s ignored",
                           execution.execution_id, execution.attempt, status)
            return False
        raise
    return True


def _trim(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... [{len(text) - limit} characters cut]"


class EventSink:
    """Buffers ansible-runner events and writes them in batches from a thread of its own.

    With `log_start` (the execution's `logStart` for this attempt) each event records where its
    stdout starts in the execution's log (`logOffset`, UTF-8 bytes; see
    chalicelib/executions/logtext.py), so that the log route can find any offset without reading
    the events before it. Offsets are counted from the stdout as stored: masked, then trimmed.
    """

    def __init__(self, execution_id: str, attempt: int, mask: Masker, retention_days: int,
                 flush_seconds: float = 0.25, on_flush: Callable[[list[ExecutionEvent]], None] | None = None,
                 log_start: int | None = None) -> None:
        self._on_flush = on_flush
        self._execution_id = execution_id
        self._attempt = attempt
        self._mask = mask
        self._expires = int(time.time()) + retention_days * 86400
        self._buffer: list[ExecutionEvent] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._flush_seconds = flush_seconds
        # The log's byte offset after the last event added; the attempt's header comes first.
        self._log_position = None if log_start is None else int(log_start) + byte_length(attempt_header(attempt))
        self._thread = threading.Thread(target=self._loop, name="event-sink", daemon=True)
        self._thread.start()
        self.count = 0

    def add(self, event: dict) -> None:
        """Queue one ansible-runner event (not ansible's warning about our own strategy plugin)."""
        if event.get("event") == "deprecated" and OWN_PLUGIN_WARNING in (event.get("stdout") or ""):
            return
        item = self.build(event)
        with self._lock:
            if self._log_position is not None:
                item.log_offset = self._log_position
                self._log_position += byte_length(event_text(item.stdout))
            self._buffer.append(item)
            self.count += 1
        if len(self._buffer) >= 25:
            self._wake.set()

    def build(self, event: dict) -> ExecutionEvent:
        """The stored event: every string in it masked (task and play names, results, errors,
        stdout) before it is serialised or trimmed."""
        data = event.get("event_data") or {}
        masked = self._mask.mask_strings({
            "event": str(event.get("event") or "unknown"),
            "host": data.get("host") or data.get("remote_addr"),
            "task": data.get("task"),
            "stdout": event.get("stdout") or "",
            "created": event.get("created"),
            "data": {key: data[key] for key in EVENT_DATA_KEYS if key in data},
        })
        return ExecutionEvent(
            self._execution_id, self._attempt * SEQ_PER_ATTEMPT + int(event.get("counter") or 0),
            attempt=self._attempt, event=masked["event"], host=masked["host"], task=masked["task"],
            stdout=_trim(masked["stdout"], MAX_STDOUT), created=masked["created"],
            data=self._data(masked["data"]), expires_at=self._expires)

    @staticmethod
    def _data(selected: dict) -> str:
        text = json.dumps(selected, default=str)
        if len(text) <= MAX_DATA:
            return text
        # Too large to keep whole: keep a preview, still valid JSON for the events route.
        return json.dumps({"truncated": True, "size": len(text), "preview": text[:MAX_DATA]})

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write what is buffered."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if not batch:
            return
        try:
            with ExecutionEvent.batch_write() as writer:
                for item in batch:
                    writer.save(item)
        except Exception:  # noqa: BLE001 - events are best effort; the status is what must land
            logger.exception("could not write %d events of execution %s", len(batch), self._execution_id)
            return
        if self._on_flush is not None:
            self._on_flush(batch)

    def close(self) -> None:
        """Write everything left and stop the thread."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


class RunTask:
    """The token of the workflow's Run task, unknown until the run handoff has stored it on the row.

    The worker learns it from the row: its supervisor's reads, and the rows its own conditional
    writes answer. Only a token of the worker's own attempt is ever given here.
    """

    def __init__(self) -> None:
        self._token: str | None = None
        self.known = threading.Event()

    @property
    def token(self) -> str | None:
        return self._token

    def learn(self, token: str | None) -> None:
        """Keep the first token seen (an attempt has one Run task)."""
        if token and self._token is None:
            self._token = token
            self.known.set()


class Heartbeat:
    """Tells Step Functions the worker is alive; notices when the attempt is over without it.

    It beats on the Run task, whose heartbeat clock starts when the workflow hands the task's
    token over (after the claim): until the token is known there is no clock to reset, and
    waiting in the queue never counted. The first beat goes as soon as the token is known.
    """

    def __init__(self, stepfunctions: Any, task: RunTask, interval: float) -> None:
        self._sfn = stepfunctions
        self._task = task
        self._interval = interval
        self._stop = threading.Event()
        self.attempt_over = threading.Event()
        self.reason: str | None = None
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            token = self._task.token
            if token is None:
                self._task.known.wait(min(self._interval, 0.25))  # woken as soon as it is learned
                continue
            try:
                self._sfn.send_task_heartbeat(taskToken=token)
            except ClientError as exc:
                code = token_gone(exc)
                if code is not None:
                    # The workflow has given up on this attempt; the supervisor sees what it
                    # recorded and ends the run.
                    self.reason = f"the attempt's task is over ({code})"
                    self.attempt_over.set()
                    return
                logger.warning("heartbeat failed: %s", exc.response.get("Error", {}).get("Code", ""))
            except Exception:  # noqa: BLE001 - a heartbeat is retried at the next beat
                logger.exception("heartbeat failed")
            if self._stop.wait(self._interval):
                return

    def stop(self) -> None:
        self._stop.set()


def report_result(stepfunctions: Any, task_token: str, output: dict) -> None:
    """Hand the attempt's result to its workflow (ignored when the task is already over)."""
    if not end_task(stepfunctions, task_token, output):
        logger.info("result kept in the table only")
