"""Local mode's stand-in for the Fargate launcher and ECS: a fresh sandboxed process per run message.

On AWS the launcher (chalicelib/executions/launcher.py) turns each message of the Fargate queue
into a Fargate task: a fresh microVM running the worker image with `python -m runner_lambda.fargate`
and the message in its environment. Here each message becomes a fresh process running the same
module, in a sandbox of its own (a new PID namespace and a new /tmp, built as the workers' are,
with a Fargate task's variables instead of Lambda's), discarded when the run ends. At most
RUNNER_LOCAL_FARGATE_WORKERS run at once; further messages wait in the queue, as they would for
capacity (or for the launcher's concurrency) on AWS.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from typing import Any

from chalicelib.executions.launcher import task_environment
from chalicelib.executions.tasks import TaskMessage
from localmode.sandbox import SandboxPlan, worker_environment, wrap
from localmode.queue_poller import POLL_WAIT_SECONDS
from localmode.workers import die_with_parent, end_process_groups

logger = logging.getLogger("runner.local.fargate")
DEFAULT_FARGATE_WORKERS = 2


class FargatePool:
    """Polls the Fargate queue and runs each message as a task of its own."""

    def __init__(self, sqs: Any, queue_url: str, size: int, environment: dict[str, str],
                 sandbox: SandboxPlan | None = None) -> None:
        self.size = size
        self._sqs = sqs
        self._queue_url = queue_url
        self._environment = environment
        self._sandbox = sandbox
        self._tasks: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="fargate-launcher", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def running(self) -> int:
        """How many tasks run now (ended ones are collected)."""
        with self._lock:
            self._tasks = [task for task in self._tasks if task.poll() is None]
            return len(self._tasks)

    def _poll(self) -> None:
        while not self._stopping.is_set():
            if self.running() >= self.size:
                self._stopping.wait(0.2)
                continue
            try:
                answer = self._sqs.receive_message(QueueUrl=self._queue_url, MaxNumberOfMessages=1,
                                                   WaitTimeSeconds=POLL_WAIT_SECONDS)
            except Exception:  # noqa: BLE001 - the emulator may be going away; try again shortly
                logger.exception("receive from the Fargate queue failed")
                self._stopping.wait(1.0)
                continue
            for message in answer.get("Messages", []):
                self._launch(message)

    def _launch(self, message: dict) -> None:
        """Start the message's task, then delete the message (as the launcher does once RunTask answers)."""
        try:
            run = TaskMessage.parse(message["Body"])
        except (KeyError, TypeError, ValueError):
            logger.exception("unreadable message %s on the Fargate queue; left to its redrive", message["MessageId"])
            return
        command = [sys.executable, "-m", "runner_lambda.fargate"]
        # Fargate's own variables only inside a sandbox: with them, the worker owns its environment
        # (it kills every other process of its user and empties /tmp), which outside one is the developer's.
        environment = {**os.environ, **self._environment, **task_environment(run),
                       "RUNNER_PARENT_PID": str(os.getpid())}
        if self._sandbox is not None:
            command, environment = wrap(command, self._sandbox), worker_environment(environment, fargate=True)
        with self._lock:
            if self._stopping.is_set():
                return  # the message comes back after its visibility timeout
            # Its own process group (stopped as one) that dies with local mode, like the workers.
            self._tasks.append(subprocess.Popen(command, env=environment, start_new_session=True,
                                                preexec_fn=die_with_parent))
        logger.info("execution %s attempt %d runs as a local Fargate task", run.execution_id, run.attempt)
        self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling and end every task and whatever it started."""
        self._stopping.set()
        self._thread.join(timeout=POLL_WAIT_SECONDS + 2)
        with self._lock:
            tasks = list(self._tasks)
        end_process_groups(tasks, timeout)
