"""Local mode's stand-in for EventBridge's "Step Functions Execution Status Change" events.

On AWS an EventBridge rule calls the `slot_release` function when an execution workflow fails,
times out or is aborted. The emulator emits no events: this watcher lists the state machine's
executions that ended that way and hands each one, once, to the same handler with the event
EventBridge would have built (the fields the handler reads, in EventBridge's shape).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from localmode import invocations

logger = logging.getLogger("runner.local.workflow-events")

DETAIL_TYPE = "Step Functions Execution Status Change"


def status_change_event(execution: dict, region: str, account: str) -> dict:
    """EventBridge's event for a workflow's status change, from DescribeExecution's answer."""
    def epoch_ms(value: Any) -> int | None:
        return int(value.timestamp() * 1000) if value is not None else None

    return {
        "version": "0", "id": execution["executionArn"], "detail-type": DETAIL_TYPE, "source": "aws.states",
        "account": account, "region": region, "resources": [execution["executionArn"]],
        "detail": {
            "executionArn": execution["executionArn"], "stateMachineArn": execution["stateMachineArn"],
            "name": execution["name"], "status": execution["status"],
            "startDate": epoch_ms(execution.get("startDate")), "stopDate": epoch_ms(execution.get("stopDate")),
            "input": execution.get("input"), "output": execution.get("output"),
        },
    }


class WorkflowEndWatcher:
    """Every `interval` seconds, each newly failed, timed-out or aborted workflow goes to `handler(event, None)`."""

    def __init__(self, stepfunctions: Any, state_machine_arn: str, handler: Callable[[dict, Any], Any],
                 statuses: tuple[str, ...], interval: float = 0.5) -> None:
        self._sfn = stepfunctions
        self._arn = state_machine_arn
        self._handler = handler
        self._statuses = statuses
        self._interval = interval
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="workflow-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the emulator may be stopping; look again
                logger.exception("watching the workflows failed")

    def poll_once(self) -> int:
        """Hand over the workflows that ended since the last look; answers how many."""
        handed = 0
        _, region, account = self._arn.split(":")[2:5]
        for status in self._statuses:
            pages = self._sfn.get_paginator("list_executions").paginate(stateMachineArn=self._arn, statusFilter=status)
            for page in pages:
                for summary in page["executions"]:
                    arn = summary["executionArn"]
                    if arn in self._seen:
                        continue
                    execution = self._sfn.describe_execution(executionArn=arn)
                    with invocations.logged("slot_release"):
                        self._handler(status_change_event(execution, region, account), None)
                    self._seen.add(arn)
                    handed += 1
        return handed
