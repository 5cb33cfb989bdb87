"""Ending the execution workflow's two waiting tasks, `Queue` and `Run`, by their task tokens.

Both are `sqs:sendMessage.waitForTaskToken` states of infra/statemachines/execution.asl.json. The
`Queue` task waits for a worker to claim the attempt; its output tells the workflow whether one
did (`claimed`). The `Run` task waits for the claimed run to end; its output only says "this
attempt is over" (the outcome itself is in the executions table). The worker ends both, and the
run handoff (chalicelib/executions/handoff.py) ends a `Run` task whose attempt is already over.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

logger = logging.getLogger("runner.executions")

@dataclass(frozen=True)
class TaskMessage:
    """What both waiting states send with their token (the same shape on both queues): which
    attempt of which execution, and the task token that ends the state."""

    account_alias: str
    job_id: str
    execution_id: str
    attempt: int
    task_token: str

    @classmethod
    def parse(cls, body: str) -> "TaskMessage":
        data = json.loads(body)
        return cls(data["accountAlias"], data["jobId"], data["executionId"], int(data["attempt"]),
                   data["taskToken"])


# What Step Functions answers for the token of a task that is over: it timed out (its heartbeat
# or its bound), it was ended already, or its workflow is gone.
TOKEN_GONE = ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist")


def token_gone(exc: ClientError) -> str | None:
    """The error code when `exc` says the task is already over; None for any other error."""
    code = exc.response.get("Error", {}).get("Code", "")
    return code if code in TOKEN_GONE else None


def end_task(stepfunctions: Any, task_token: str, output: dict) -> bool:
    """SendTaskSuccess; False (and nothing raised) when the task was already over."""
    try:
        stepfunctions.send_task_success(taskToken=task_token, output=json.dumps(output))
    except ClientError as exc:
        code = token_gone(exc)
        if code is None:
            raise
        logger.info("workflow task already over (%s)", code)
        return False
    return True


def queue_output(claimed: bool, **details: Any) -> dict:
    """The `Queue` task's output: `claimed` decides whether the workflow goes on to `Run`."""
    return {"claimed": claimed, **details}


def run_output(execution_id: str, attempt: int, status: str | None, **details: Any) -> dict:
    """The `Run` task's output: the attempt is over, and how it ended when that is known."""
    return {"executionId": execution_id, "attempt": attempt, "status": status, **details}
