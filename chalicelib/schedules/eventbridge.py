"""The EventBridge Scheduler side of job schedules: one Scheduler schedule per AWS expression."""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.platform.config import Settings

logger = logging.getLogger("runner.scheduler")

# Scheduler puts the fire time of each invocation where this placeholder stands in the input.
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
TRIGGER_LOGICAL_ID = "ScheduleTrigger"


@dataclass(frozen=True)
class Desired:
    """What Scheduler must hold for one job schedule: an expression per name (none: nothing)."""

    account_alias: str
    job_id: str
    id: str
    schedule_id: str
    expressions: tuple[str, ...]
    timezone: str


def schedule_names(schedule_id: str, count: int = 2) -> list[str]:
    """Scheduler schedule names of a job schedule: its scheduleId, then scheduleId-2 (OR-split)."""
    return [schedule_id] + [f"{schedule_id}-{index + 1}" for index in range(1, count)]


def _missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ResourceNotFoundException"


class SchedulerSchedules:
    """Creates, updates and deletes a job schedule's Scheduler schedules in the `runner` group."""

    def __init__(self, scheduler: Any, settings: Settings, cloudformation: Any = None) -> None:
        self._scheduler = scheduler
        self._settings = settings
        self._cloudformation = cloudformation
        self._target_arn = settings.trigger_function_arn or None
        self._lock = threading.Lock()

    def target_arn(self) -> str:
        """The trigger function's ARN: configured, or found once through the stack."""
        with self._lock:
            if self._target_arn is None:
                if not self._settings.stack_name or self._cloudformation is None:
                    raise RuntimeError("RUNNER_TRIGGER_FUNCTION_ARN or RUNNER_STACK_NAME must be set")
                found = self._cloudformation.describe_stack_resource(
                    StackName=self._settings.stack_name, LogicalResourceId=TRIGGER_LOGICAL_ID)["StackResourceDetail"]
                _, partition, _, region, account = found["StackId"].split(":")[:5]
                self._target_arn = f"arn:{partition}:lambda:{region}:{account}:function:{found['PhysicalResourceId']}"
            return self._target_arn

    def _request(self, desired: Desired, name: str, expression: str) -> dict:
        payload = {"accountAlias": desired.account_alias, "jobId": desired.job_id, "id": desired.id,
                   "scheduleId": desired.schedule_id, "scheduleName": name, "fireTime": SCHEDULED_TIME}
        return {
            "Name": name,
            "GroupName": self._settings.schedule_group,
            "ScheduleExpression": expression,
            "ScheduleExpressionTimezone": desired.timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED",
            "Description": f"Runner schedule {desired.id} of job {desired.job_id} ({desired.account_alias})",
            "ActionAfterCompletion": "DELETE" if expression.startswith("at(") else "NONE",
            "Target": {
                "Arn": self.target_arn(),
                "RoleArn": self._settings.scheduler_role_arn,
                "Input": json.dumps(payload, sort_keys=True),
                # A late fire is worth little; a duplicate one is dropped by the trigger.
                "RetryPolicy": {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 20},
            },
        }

    def create(self, desired: Desired) -> None:
        """Create the schedules of a new job schedule (deleting those made if one fails)."""
        made: list[str] = []
        try:
            for name, expression in zip(schedule_names(desired.schedule_id), desired.expressions):
                self._scheduler.create_schedule(**self._request(desired, name, expression))
                made.append(name)
        except Exception:
            self.delete_names(made)
            raise

    def apply(self, desired: Desired) -> None:
        """Make Scheduler hold exactly `desired` (idempotent): update, create, delete as needed."""
        names = schedule_names(desired.schedule_id)
        for name, expression in zip(names, desired.expressions):
            request = self._request(desired, name, expression)
            try:
                self._scheduler.update_schedule(**request)
            except ClientError as error:
                if not _missing(error):
                    raise
                self._scheduler.create_schedule(**request)
        self.delete_names(names[len(desired.expressions):])

    def delete_names(self, names: list[str]) -> None:
        """Delete Scheduler schedules by name; one already gone is fine."""
        for name in names:
            try:
                self._scheduler.delete_schedule(Name=name, GroupName=self._settings.schedule_group)
            except ClientError as error:
                if not _missing(error):
                    raise

    def remove(self, schedule_id: str) -> None:
        """Delete every Scheduler schedule of a job schedule."""
        self.delete_names(schedule_names(schedule_id))

    def describe(self, name: str) -> dict | None:
        """One Scheduler schedule, or None."""
        try:
            return self._scheduler.get_schedule(Name=name, GroupName=self._settings.schedule_group)
        except ClientError as error:
            if _missing(error):
                return None
            raise

    def listed(self) -> list[dict]:
        """Every schedule of the group (name and creation date at least)."""
        found: list[dict] = []
        for page in self._scheduler.get_paginator("list_schedules").paginate(GroupName=self._settings.schedule_group):
            found.extend(page.get("Schedules", []))
        return found
