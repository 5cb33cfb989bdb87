"""The Fargate launcher: a run message from the Fargate queue becomes one ECS Fargate task.

The execution workflow's `Queue` state sends the run message of an attempt that cannot fit in a
Lambda invocation to the Fargate queue instead of the run queue (chalicelib/executions/placement.py).
The launcher (`fargate_launcher` in app.py) starts a task of the worker's task definition whose
environment carries that message and nothing else: the ids of the attempt and the `Queue` task's
token. The task (`python -m runner_lambda.fargate`) then claims and runs the attempt as the Lambda
worker would, and ends the workflow's tasks with its tokens.

A launch that fails is retried (the message comes back after the queue's visibility timeout);
the last try the queue allows ends the `Queue` task with a failure instead, so that the workflow
records the attempt failed ("worker lost") now rather than when its bound passes.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.executions.tasks import TaskMessage, token_gone
from chalicelib.platform.config import Settings

logger = logging.getLogger("runner.launcher")

# The worker's container in the task definition (infra/template.yaml, FargateTaskDefinition).
CONTAINER = "worker"
# The task's environment variable holding the run message (read by runner_lambda/fargate.py).
MESSAGE_VARIABLE = "RUNNER_RUN_MESSAGE"
# The Fargate queue's maxReceiveCount (infra/template.yaml): the last try ends the Queue task.
LAUNCH_TRIES = 3
LAUNCH_FAILED = "Runner.LaunchFailed"


class LaunchFailed(Exception):
    """ECS did not start the task (the message is tried again)."""


def message_body(message: TaskMessage) -> str:
    """The run message as the task receives it: the fields the workflow sent, no more."""
    return json.dumps({"taskToken": message.task_token, "accountAlias": message.account_alias,
                       "jobId": message.job_id, "executionId": message.execution_id, "attempt": message.attempt})


def task_environment(message: TaskMessage) -> dict[str, str]:
    """The environment a launched task gets on top of its task definition's."""
    return {MESSAGE_VARIABLE: message_body(message)}


class FargateLauncher:
    """Starts one Fargate task per run message."""

    def __init__(self, ecs: Any, stepfunctions: Any, settings: Settings) -> None:
        self._ecs = ecs
        self._sfn = stepfunctions
        self._settings = settings

    def handle(self, body: str, receive_count: int) -> str | None:
        """Launch the message's task; answer its ARN (None when the launch was given up)."""
        message = TaskMessage.parse(body)
        try:
            return self.launch(message)
        except (LaunchFailed, ClientError) as exc:
            if receive_count < LAUNCH_TRIES:
                raise
            logger.error("execution %s attempt %d: no Fargate task after %d tries (%s); the attempt fails",
                         message.execution_id, message.attempt, receive_count, exc)
            self._give_up(message, str(exc))
            return None

    def launch(self, message: TaskMessage) -> str:
        """RunTask with the message in the container's environment; answer the task's ARN."""
        settings = self._settings
        if not settings.fargate_subnets:
            raise LaunchFailed("no subnets for Fargate tasks: deploy the stack with the FargateSubnets and "
                               "FargateVpcId parameters")
        network = {"subnets": list(settings.fargate_subnets),
                   "assignPublicIp": "ENABLED" if settings.fargate_assign_public_ip else "DISABLED"}
        if settings.fargate_security_group:
            network["securityGroups"] = [settings.fargate_security_group]
        environment = [{"name": name, "value": value} for name, value in task_environment(message).items()]
        answer = self._ecs.run_task(
            cluster=settings.fargate_cluster, taskDefinition=settings.fargate_task_definition,
            launchType="FARGATE", count=1, networkConfiguration={"awsvpcConfiguration": network},
            overrides={"containerOverrides": [{"name": CONTAINER, "environment": environment}]},
            # One task per attempt, even when a message is delivered twice within ECS's hour.
            clientToken=f"{message.execution_id}-{message.attempt}",
            startedBy="runner-launcher")
        tasks = answer.get("tasks") or []
        if not tasks:
            reasons = "; ".join(f"{failure.get('reason')} {failure.get('detail') or ''}".strip()
                                for failure in answer.get("failures") or []) or "no task and no reason"
            raise LaunchFailed(f"ECS started no task: {reasons}")
        task_arn = tasks[0]["taskArn"]
        logger.info("execution %s attempt %d runs as Fargate task %s", message.execution_id, message.attempt, task_arn)
        return task_arn

    def _give_up(self, message: TaskMessage, why: str) -> None:
        try:
            self._sfn.send_task_failure(taskToken=message.task_token, error=LAUNCH_FAILED, cause=why[:32768])
        except ClientError as exc:
            if token_gone(exc) is None:
                raise
