"""Watching an attempt while it runs: stop and kill requests, the attempt's end, Lambda's ceiling."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib.executions import states
from chalicelib.platform.models import Execution
from chalicelib.platform.storage import condition_failed
from runner_lambda.processes import kill_tree
from runner_lambda.reporting import RunTask, now_ms

logger = logging.getLogger("runner.worker")

POLL_SECONDS = 0.5


class Supervisor:
    """Polls the execution's status and acts on it, from claim to result.

    Each read also picks up the workflow's Run task token once the run handoff has stored it
    (`run_task`), which starts the heartbeats.

    STOPPING: the stop file appears, so no new task starts (graceful). KILLING: every process of
    the run is killed now. A final status or another attempt: this attempt is over elsewhere,
    so its processes are killed. Near Lambda's ceiling the run is asked to stop, and killed
    at the very end; a Fargate task (no `lambda_context`) has no ceiling: its TTL bounds it.
    """

    def __init__(self, execution: Execution, run_id: str, stop_file: Path, lambda_context: Any = None,
                 ceiling_margin_seconds: float = 60.0, kill_margin_seconds: float = 10.0,
                 run_task: RunTask | None = None) -> None:
        self.job_id = execution.job_id
        self.execution_id = execution.execution_id
        self.attempt = int(execution.attempt)
        self.run_id = run_id
        self.stop_file = stop_file
        self.run_task = run_task or RunTask()
        self._context = lambda_context
        self._ceiling_ms = ceiling_margin_seconds * 1000
        self._kill_ms = kill_margin_seconds * 1000
        self.stop_requested = threading.Event()
        self.killed = threading.Event()
        self.over = threading.Event()
        self.status = execution.status
        self.reason: str | None = execution.status_reason
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)

    def start(self) -> "Supervisor":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (the attempt has ended)."""
        self._done.set()
        self._thread.join(timeout=5)

    def should_cancel(self) -> bool:
        """ansible-runner's cancel callback: true once the run must end now."""
        return self.killed.is_set() or self.over.is_set()

    def _loop(self) -> None:
        while not self._done.wait(POLL_SECONDS):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - one failed poll must not end the watch
                logger.exception("supervision of execution %s failed once", self.execution_id)

    def check(self) -> None:
        """One look at the execution, and what follows from it."""
        try:
            current = Execution.get(self.job_id, self.execution_id, consistent_read=True,
                                    attributes_to_get=["status", "attempt", "statusReason", "runToken"])
        except DoesNotExist:
            self._end_here("the execution no longer exists")
            return
        self.status, self.reason = current.status, current.status_reason
        if int(current.attempt) == self.attempt:
            self.run_task.learn(current.run_token)  # handed over by the workflow after the claim
        if int(current.attempt) != self.attempt or current.status in states.FINAL:
            self._end_here(f"the attempt ended elsewhere ({current.status})")
        elif current.status == states.KILLING:
            self.kill()
        elif current.status == states.STOPPING:
            self.request_stop()
        self._watch_ceiling()

    def request_stop(self) -> None:
        """Let the task now running finish, start no other."""
        if not self.stop_requested.is_set():
            self.stop_file.parent.mkdir(parents=True, exist_ok=True)
            self.stop_file.touch()
            self.stop_requested.set()
            logger.info("execution %s: stop requested, no new task will start", self.execution_id)

    def kill(self) -> None:
        """End every process of the run now."""
        first = not self.killed.is_set()
        self.killed.set()
        count = kill_tree(self.run_id)
        if first:
            logger.info("execution %s: killed %d processes", self.execution_id, count)

    def _end_here(self, why: str) -> None:
        if not self.over.is_set():
            logger.warning("execution %s attempt %d: %s; ending its processes", self.execution_id, self.attempt, why)
        self.over.set()
        kill_tree(self.run_id)

    def _watch_ceiling(self) -> None:
        if self._context is None:
            return
        remaining = self._context.get_remaining_time_in_millis()
        if remaining < self._kill_ms and not self.killed.is_set():
            self._transition(states.KILLING, "the worker's time limit was reached before the run stopped")
            self.kill()
        elif remaining < self._ceiling_ms and not self.stop_requested.is_set():
            self._transition(states.STOPPING, "stopped: the worker's time limit (Lambda's timeout) was near")
            self.request_stop()

    def _transition(self, target: str, reason: str) -> None:
        try:
            Execution(self.job_id, self.execution_id).update(
                actions=[Execution.status.set(target), Execution.status_reason.set(reason),
                         Execution.updated_time.set(now_ms())],
                condition=states.transition_condition(Execution, target, attempt=self.attempt))
            self.status, self.reason = target, reason
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
