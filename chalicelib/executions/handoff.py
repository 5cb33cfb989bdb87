"""The run handoff: the execution workflow's `Run` task token, carried to the worker by the execution's row.

Why a handoff at all. The workflow watches a run with a heartbeat window, and a heartbeat clock
starts when its task starts. Were the run queue's message the heartbeat task, time spent waiting
in the queue (Lambda throttled, a backlog) would count against the window and a run would be
recorded "worker lost" before any worker saw it. So waiting in the queue is the `Queue` task (no
heartbeat), which the worker ends once it has claimed the attempt, and only then does the
workflow start the `Run` task, heartbeat and all. The `Run` task's token cannot reach the worker
through the run queue (its message is already taken), and Step Functions (moto's too) runs no
code of ours: it puts the token on the handoff queue, whose consumer (this module) stores it on
the execution's row, where the worker's supervisor reads it within half a second.

The race with the end of the run is settled by one conditional write. The token is stored only
while the attempt is still the row's attempt and active; the worker records the final status
with a conditional write too, so one of them sees the other's write:

- stored first: the worker's final write returns the row with the token, and the worker ends
  the `Run` task with its result;
- the attempt already ended: the store fails its condition, and the handoff ends the `Run` task
  itself, with the result rebuilt from the row.

A handoff for an attempt that is no longer the row's (the execution was restarted since, which
it can be only from a final status) also ends the `Run` task: the attempt is over, and leaving
the task to its heartbeat would hold a run slot of the account for a whole window and record a
"worker lost" detour. The same holds for an execution that no longer exists.
"""
from __future__ import annotations

import logging
from typing import Any

from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib.executions import states
from chalicelib.executions.tasks import TaskMessage, end_task, run_output
from chalicelib.platform import models
from chalicelib.platform.models import Execution
from chalicelib.platform.storage import condition_failed

logger = logging.getLogger("runner.executions")

STORED = "stored"  # the worker will end the Run task
ENDED = "ended"  # the attempt had ended: the handoff ended the Run task with its result
SUPERSEDED = "superseded"  # another attempt (or no execution) by now: the Run task ended without a status


# The handoff queue's message: the `Run` task token of one attempt.
Handoff = TaskMessage


class RunHandoff:
    """Stores a `Run` task token on its attempt's row, or ends the task when the attempt is over."""

    def __init__(self, stepfunctions: Any) -> None:
        self._sfn = stepfunctions

    def handle(self, handoff: Handoff) -> str:
        """STORED, ENDED or SUPERSEDED; raises (the message comes back) only for a fault of storage or Step Functions."""
        models.bind()
        try:
            Execution(handoff.job_id, handoff.execution_id).update(
                actions=[Execution.run_token.set(handoff.task_token)],
                condition=(Execution.attempt == handoff.attempt) & Execution.status.is_in(*states.ACTIVE))
            logger.info("execution %s attempt %d: run token stored", handoff.execution_id, handoff.attempt)
            return STORED
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
        try:
            current = Execution.get(handoff.job_id, handoff.execution_id, consistent_read=True,
                                    attributes_to_get=["status", "attempt"])
        except DoesNotExist:
            end_task(self._sfn, handoff.task_token, run_output(handoff.execution_id, handoff.attempt, None))
            return SUPERSEDED
        if int(current.attempt) != handoff.attempt:
            end_task(self._sfn, handoff.task_token, run_output(handoff.execution_id, handoff.attempt, None,
                                                              restartedAs=int(current.attempt)))
            return SUPERSEDED
        # The same attempt, and the condition failed: it is no longer active, so it has ended.
        end_task(self._sfn, handoff.task_token, run_output(handoff.execution_id, handoff.attempt, current.status))
        logger.info("execution %s attempt %d had ended (%s) before its handoff", handoff.execution_id,
                    handoff.attempt, current.status)
        return ENDED
