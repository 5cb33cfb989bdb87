"""Fargate entry point: one run message, from the task's environment, through the Lambda handler's path.

Runs that cannot fit in a Lambda invocation (chalicelib/executions/placement.py) are started as
an ECS Fargate task of the worker image, with this module as its command
(`python -m runner_lambda.fargate`). The launcher (chalicelib/executions/launcher.py) puts the
run message, ids and the workflow's task token, in the task's environment; everything else the
worker reads from the tables, as on Lambda. The attempt then goes exactly as on Lambda (claim,
heartbeats, events, stop, kill, TTL, result), without Lambda's ceiling, and the process exits:
the task ends with it, so nothing outlives the run and no `ecs:StopTask` is needed.
"""
from __future__ import annotations

import logging
import os
import sys

from chalicelib.executions.launcher import MESSAGE_VARIABLE
from runner_lambda.handler import run_message
from runner_lambda.isolation import close_worker
from runner_lambda.processes import become_subreaper

logger = logging.getLogger("runner.worker")


def main() -> int:
    """Run the task's attempt; exit 0 once its result is reported, 1 if the message is missing."""
    logging.basicConfig(level=os.environ.get("RUNNER_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The message holds the workflow's task token: out of the environment before anything starts.
    body = os.environ.pop(MESSAGE_VARIABLE, "")
    if not body:
        logger.error("no run message in %s: this task has nothing to run", MESSAGE_VARIABLE)
        return 1
    become_subreaper()
    close_worker()
    status = run_message(body, None)
    logger.info("the task's attempt ended %s", status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
