"""Job schedules: stored in DynamoDB, fired by EventBridge Scheduler, run as a service account.

Consistency with Scheduler, without a distributed transaction:
- create: Scheduler schedules first, then the DynamoDB transaction; if that fails, the Scheduler
  schedules are deleted again.
- update: Scheduler first, then a conditional write; if that fails, Scheduler is made to match
  whatever DynamoDB holds now.
- delete: DynamoDB first, then Scheduler.
A process that dies between the two steps leaves a Scheduler schedule that DynamoDB does not
describe. The trigger recognises such a fire (no schedule item, or a fire time the stored trigger
does not have), starts nothing and repairs Scheduler; `reconcile` repairs everything at once.
"""
from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from chalicelib.schedules import cron
from chalicelib.platform import models
from chalicelib.platform.config import Settings
from chalicelib.platform.errors import Conflict, Forbidden, InvalidRequest, NotFound, RunnerError, Unauthenticated
from chalicelib.executions.options import limit_hosts
from chalicelib.executions.service import DuplicateExecution, ExecutionService
from chalicelib.jobs.service import JobService, now_ms
from chalicelib.platform.models import Job, Schedule, ServiceAccount
from chalicelib.platform.storage import condition_failed, failed_conditions
from chalicelib.schedules.spec import (
    CRON, DATE, ScheduleInput, Trigger, epoch_ms, format_instant, from_epoch_ms, next_fires, parse_schedule,
)
from chalicelib.schedules.eventbridge import Desired, SchedulerSchedules, schedule_names
from chalicelib.auth.service_accounts import ServiceAccountService

logger = logging.getLogger("runner.schedules")

ACTIVE, COMPLETED = "ACTIVE", "COMPLETED"
NEXT_RUNS = 5
# A Scheduler schedule younger than this may belong to a create still under way: never an orphan.
ORPHAN_AGE = timedelta(minutes=5)
# Execution ids of fires derive from (schedule, fire time): a fire delivered twice starts once.
FIRE_NAMESPACE = uuid.UUID("6f1c1c58-8f5e-4c1e-9d83-52b1f0e3f6a1")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def trigger_of(item: Schedule) -> Trigger:
    return Trigger(item.trigger_type, item.expression, item.timezone or "UTC", tuple(item.aws_expressions or ()))


def desired_of(item: Schedule) -> Desired:
    """What Scheduler must hold for the stored schedule (nothing once it has completed)."""
    trigger = trigger_of(item)
    expressions = () if item.status == COMPLETED else trigger.aws_expressions
    return Desired(item.account_alias, item.job_id, item.id, item.schedule_id, expressions, trigger.aws_timezone)


def fire_execution_id(schedule_id: str, fire_ms: int) -> str:
    """The id of the execution a fire of a schedule starts."""
    return str(uuid.uuid5(FIRE_NAMESPACE, f"{schedule_id}/{fire_ms}"))


def render_schedule(item: Schedule, now: datetime) -> dict:
    """The schedule as the API answers it, with its next fire times (UTC)."""
    trigger = trigger_of(item)
    runs = [] if item.status == COMPLETED else next_fires(trigger, now, NEXT_RUNS)
    last_run = None
    if item.last_fire_time is not None:
        last_run = {"fireTime": format_instant(from_epoch_ms(item.last_fire_time)),
                    "executionId": item.last_execution_id}
    return {
        "id": item.id,
        "jobId": item.job_id,
        "accountAlias": item.account_alias,
        "scheduleId": item.schedule_id,
        "description": item.description or "",
        "serviceAccountAlias": item.service_account_alias,
        "trigger": trigger.render(),
        "options": json.loads(item.options) if item.options else {},
        "status": item.status,
        "nextRuns": [format_instant(run) for run in runs],
        "lastRun": last_run,
        "lastError": item.last_error,
        "lastErrorTime": format_instant(from_epoch_ms(item.last_error_time)) if item.last_error_time else None,
        "createdTime": int(item.created_time),
        "lastUpdatedTime": int(item.last_updated_time),
    }


class ScheduleService:
    """Job schedules of accounts, and the handler of their fires."""

    def __init__(self, jobs: JobService, accounts: ServiceAccountService, executions: ExecutionService,
                 scheduler: SchedulerSchedules, settings: Settings,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self._jobs = jobs
        self._accounts = accounts
        self._executions = executions
        self._scheduler = scheduler
        self._settings = settings
        self._clock = clock

    # --- reads ------------------------------------------------------------------------------

    def _job_items(self, account: str, job_id: str) -> list[Schedule]:
        models.bind()
        return [item for item in Schedule.query(job_id, consistent_read=True) if item.account_alias == account]

    def _load(self, account: str, job_id: str, schedule: str) -> Schedule:
        """A schedule by its id (or, as a courtesy, by its scheduleId)."""
        models.bind()
        try:
            item = Schedule.get(job_id, schedule, consistent_read=True)
        except DoesNotExist:
            item = next((found for found in self._job_items(account, job_id) if found.schedule_id == schedule), None)
        if item is None or item.account_alias != account:
            raise NotFound(f"schedule {schedule} of job {job_id} not found in account {account}")
        return item

    def get(self, account: str, job_id: str, schedule: str) -> dict:
        """One schedule."""
        return render_schedule(self._load(account, job_id, schedule), self._clock())

    def list(self, account: str, job_id: str, page: int, size: int) -> dict:
        """A page of the job's schedules, newest first."""
        self._jobs.load(account, job_id)
        items = sorted(self._job_items(account, job_id), key=lambda item: item.created_time, reverse=True)
        now = self._clock()
        results = [render_schedule(item, now) for item in items[page * size:(page + 1) * size]]
        return {"totalSize": len(items), "page": page, "size": len(results), "results": results}

    # --- writes -----------------------------------------------------------------------------

    def _require_service_account(self, account: str, alias: str) -> None:
        try:
            self._accounts.load(account, alias)
        except NotFound:
            raise InvalidRequest("serviceAccountAlias", f"no service account {alias!r} in account {account}; "
                                                        f"create it with POST /serviceAccounts/{account}") from None

    def create(self, account: str, job_id: str, body: Any) -> dict:
        """Create a schedule of a job: its Scheduler schedules, then its item, or neither."""
        now = self._clock()
        spec = parse_schedule(body, now)
        self._check_limit(self._jobs.load(account, job_id), spec)
        self._require_service_account(account, spec.service_account_alias)
        if len(self._job_items(account, job_id)) >= self._settings.max_schedules_per_job:
            raise Conflict(f"job {job_id} has {self._settings.max_schedules_per_job} schedules, the most a job "
                           f"may have; delete one first")
        stamp = now_ms()
        item = Schedule(job_id, str(uuid.uuid4()), account_alias=account, schedule_id=str(uuid.uuid4()),
                        status=ACTIVE, revision=1, created_time=stamp, last_updated_time=stamp)
        self._assign(item, spec)
        self._scheduler.create(desired_of(item))
        try:
            with TransactWrite(connection=models.connection()) as transaction:
                transaction.save(item, condition=Schedule.id.does_not_exist())
                transaction.condition_check(Job, account, job_id, condition=Job.job_id.exists())
                transaction.update(ServiceAccount(account, spec.service_account_alias),
                                   actions=[ServiceAccount.schedule_count.add(1)],
                                   condition=ServiceAccount.alias.exists())
        except Exception as exc:
            self._scheduler.remove(item.schedule_id)
            if isinstance(exc, TransactWriteError):
                raise self._refusal(exc, account, job_id, spec.service_account_alias) from exc
            raise
        return render_schedule(item, now)

    @staticmethod
    def _check_limit(job: Job, spec: ScheduleInput) -> None:
        """A limit must match a host of the job now (each fire checks it again, against the job then)."""
        if "limit" in spec.options:
            limit_hosts(spec.options["limit"], [host["id"] for host in json.loads(job.spec)["hosts"]], "options.limit")

    @staticmethod
    def _assign(item: Schedule, spec: ScheduleInput) -> None:
        item.options = json.dumps(spec.options, sort_keys=True) if spec.options else None
        item.description = spec.description
        item.service_account_alias = spec.service_account_alias
        item.trigger_type = spec.trigger.type
        item.expression = spec.trigger.expression
        item.timezone = spec.trigger.timezone
        item.aws_expressions = list(spec.trigger.aws_expressions)

    @staticmethod
    def _refusal(exc: TransactWriteError, account: str, job_id: str, alias: str) -> RunnerError:
        """What a cancelled schedule write means, by the write whose condition failed (its job's, its account's)."""
        failed = failed_conditions(exc)
        if 1 in failed:
            return NotFound(f"job {job_id} not found in account {account}")
        if 2 in failed:
            return InvalidRequest("serviceAccountAlias", f"no service account {alias!r} in account {account}")
        return Conflict("the schedule was changed by another request; read it again")

    def update(self, account: str, job_id: str, schedule: str, body: Any) -> dict:
        """Replace a schedule's description, service account and trigger."""
        now = self._clock()
        spec = parse_schedule(body, now, allow_past=True)
        current = self._load(account, job_id, schedule)
        self._check_limit(self._jobs.load(account, job_id), spec)
        changed = not spec.trigger.same_as(trigger_of(current))
        if changed and spec.trigger.type == DATE:
            spec = parse_schedule(body, now)  # a new date must lie ahead
        alias_before = current.service_account_alias
        if spec.service_account_alias != alias_before:
            self._require_service_account(account, spec.service_account_alias)
        revision = int(current.revision)
        updated = Schedule(job_id, current.id, account_alias=account, schedule_id=current.schedule_id,
                           status=ACTIVE if changed else current.status, revision=revision + 1,
                           created_time=current.created_time, last_updated_time=now_ms())
        self._assign(updated, spec)
        if changed:
            self._scheduler.apply(desired_of(updated))
        actions = [Schedule.description.set(updated.description),
                   Schedule.service_account_alias.set(updated.service_account_alias),
                   Schedule.trigger_type.set(updated.trigger_type), Schedule.expression.set(updated.expression),
                   Schedule.timezone.set(updated.timezone), Schedule.aws_expressions.set(updated.aws_expressions),
                   Schedule.status.set(updated.status), Schedule.revision.set(revision + 1),
                   Schedule.last_updated_time.set(updated.last_updated_time),
                   Schedule.options.set(updated.options) if updated.options else Schedule.options.remove()]
        condition = Schedule.id.exists() & (Schedule.revision == revision)
        try:
            with TransactWrite(connection=models.connection()) as transaction:
                transaction.update(current, actions=actions, condition=condition)
                transaction.condition_check(Job, account, job_id, condition=Job.job_id.exists())
                if updated.service_account_alias != alias_before:
                    transaction.update(ServiceAccount(account, updated.service_account_alias),
                                       actions=[ServiceAccount.schedule_count.add(1)],
                                       condition=ServiceAccount.alias.exists())
                    transaction.update(ServiceAccount(account, alias_before),
                                       actions=[ServiceAccount.schedule_count.add(-1)])
        except Exception as exc:
            if changed:
                self._resync(account, job_id, current.id)
            if isinstance(exc, TransactWriteError):
                raise self._refusal(exc, account, job_id, updated.service_account_alias) from exc
            raise
        return render_schedule(self._load(account, job_id, current.id), now)

    def _resync(self, account: str, job_id: str, schedule: str) -> None:
        """Make Scheduler match what DynamoDB holds now for one schedule (after a failed write)."""
        try:
            self._scheduler.apply(desired_of(self._load(account, job_id, schedule)))
        except NotFound:
            logger.warning("schedule %s is gone; its Scheduler schedules are left to the reconciler", schedule)
        except Exception:  # noqa: BLE001 - the fire-time check and the reconciler repair what is left
            logger.exception("could not resynchronise schedule %s with Scheduler", schedule)

    def delete(self, account: str, job_id: str, schedule: str) -> None:
        """Delete a schedule: its item (and service-account use) first, then its Scheduler schedules."""
        item = self._load(account, job_id, schedule)
        try:
            with TransactWrite(connection=models.connection()) as transaction:
                transaction.delete(item, condition=Schedule.id.exists())
                transaction.update(ServiceAccount(account, item.service_account_alias),
                                   actions=[ServiceAccount.schedule_count.add(-1)])
        except TransactWriteError as exc:
            if 0 in failed_conditions(exc):  # the schedule's own delete: gone already
                raise NotFound(f"schedule {schedule} of job {job_id} not found in account {account}") from exc
            raise
        self._forget(item.schedule_id)

    def _forget(self, schedule_id: str) -> None:
        try:
            self._scheduler.remove(schedule_id)
        except Exception:  # noqa: BLE001 - an orphan is removed at its first fire or by the reconciler
            logger.exception("could not delete the Scheduler schedules of %s", schedule_id)

    def delete_job(self, account: str, job_id: str) -> None:
        """Delete a job together with its schedules (one transaction), then their Scheduler schedules."""
        for attempt in range(3):
            items = self._job_items(account, job_id)

            def also(transaction: TransactWrite, items: list[Schedule] = items) -> None:
                for item in items:
                    transaction.delete(item, condition=Schedule.id.exists())
                for alias, count in Counter(item.service_account_alias for item in items).items():
                    transaction.update(ServiceAccount(account, alias), actions=[ServiceAccount.schedule_count.add(-count)])

            try:
                self._jobs.delete(account, job_id, also=also)
                break
            except TransactWriteError as exc:
                if attempt == 2:
                    raise Conflict(f"the schedules of job {job_id} kept changing while deleting it; retry") from exc
        for item in items:
            self._forget(item.schedule_id)
        # A schedule created while the job was being deleted (its create checked the job first).
        for straggler in self._job_items(account, job_id):
            try:
                self.delete(account, job_id, straggler.id)
            except NotFound:
                continue

    # --- fires ------------------------------------------------------------------------------

    def fire(self, event: dict) -> dict:
        """Handle one fire of a Scheduler schedule: start the job as the schedule's service account."""
        try:
            account, job_id, schedule, name = (str(event[key]) for key in ("accountAlias", "jobId", "id", "scheduleName"))
            fired_at = datetime.fromisoformat(str(event["fireTime"]).replace("Z", "+00:00")).astimezone(timezone.utc)
        except (KeyError, TypeError, ValueError):
            logger.error("ignoring a malformed schedule fire: %s", sorted(event) if isinstance(event, dict) else event)
            return {"outcome": "invalid"}
        models.bind()
        try:
            item = self._load(account, job_id, schedule)
        except NotFound:
            return self._orphan(name)
        if not self._is_fire_time(item, fired_at):
            logger.warning("schedule %s fired at %s, which its trigger does not have; resynchronising",
                           item.id, format_instant(fired_at))
            self._resync(account, job_id, item.id)
            return {"outcome": "stale"}
        if item.status == COMPLETED:
            return {"outcome": "completed"}
        fire_ms = epoch_ms(fired_at)
        execution_id = fire_execution_id(item.id, fire_ms)
        try:
            self._accounts.log_in(account, item.service_account_alias)
        except (NotFound, Unauthenticated, Forbidden) as error:
            reason = ("no longer exists" if isinstance(error, NotFound)
                      else f"may not start jobs ({error.message})" if isinstance(error, Forbidden)
                      else f"could not log in ({error.message})")
            self._record(item, fire_ms, error=f"service account {item.service_account_alias} {reason}; "
                                              f"the fire of {format_instant(fired_at)} started nothing")
            return {"outcome": "forbidden" if isinstance(error, Forbidden) else "unauthenticated"}
        try:
            self._executions.start(account, job_id, json.loads(item.options) if item.options else {},
                                   started_by=item.id, execution_id=execution_id,
                                   scheduled_time=fire_ms)
        except DuplicateExecution:
            # Started by an earlier delivery of this fire; dispatch it if that one died before it could.
            if self._executions.ensure_dispatched(account, job_id, execution_id):
                self._record(item, fire_ms, execution_id=execution_id)
                return {"outcome": "dispatched", "executionId": execution_id}
            return {"outcome": "duplicate", "executionId": execution_id}
        except RunnerError as error:
            self._record(item, fire_ms, error=f"could not start the job: {error.message}")
            return {"outcome": "failed"}
        self._record(item, fire_ms, execution_id=execution_id)
        return {"outcome": "started", "executionId": execution_id}

    @staticmethod
    def _is_fire_time(item: Schedule, fired_at: datetime) -> bool:
        trigger = trigger_of(item)
        if trigger.type == CRON:
            return cron.matches(list(trigger.aws_expressions), trigger.aws_timezone, fired_at.replace(second=0))
        instant = trigger.instant()
        return instant is not None and abs((fired_at - instant).total_seconds()) < 60

    def _record(self, item: Schedule, fire_ms: int, execution_id: str | None = None, error: str | None = None) -> None:
        """Note a fire on the schedule (unless a newer fire or an update got there first)."""
        actions = [Schedule.last_fire_time.set(fire_ms)]
        if execution_id is not None:
            actions += [Schedule.last_execution_id.set(execution_id), Schedule.last_error.remove(),
                        Schedule.last_error_time.remove()]
        if error is not None:
            logger.warning("schedule %s: %s", item.id, error)
            actions += [Schedule.last_error.set(error), Schedule.last_error_time.set(now_ms())]
        if item.trigger_type == DATE:
            actions.append(Schedule.status.set(COMPLETED))
        condition = (Schedule.revision == item.revision) & (
            Schedule.last_fire_time.does_not_exist() | (Schedule.last_fire_time <= fire_ms))
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if not condition_failed(exc):
                raise

    def _orphan(self, name: str) -> dict:
        """A fire of a Scheduler schedule no job schedule describes: delete it once it is old enough."""
        described = self._scheduler.describe(name)
        if described is not None and self._clock() - described["CreationDate"] > ORPHAN_AGE:
            self._scheduler.delete_names([name])
            logger.warning("deleted Scheduler schedule %s: no job schedule describes it", name)
            return {"outcome": "orphan-deleted"}
        return {"outcome": "orphan"}

    def reconcile(self) -> dict:
        """Make Scheduler match DynamoDB for every schedule; delete Scheduler schedules of none."""
        models.bind()
        now = self._clock()
        known: set[str] = set()
        applied = missed = 0
        for item in Schedule.scan():
            known.update(schedule_names(item.schedule_id))
            instant = trigger_of(item).instant()
            if item.status == ACTIVE and instant is not None and instant < now - timedelta(minutes=1):
                self._record(item, epoch_ms(instant), error=f"not fired at {format_instant(instant)}: the "
                                                            f"scheduler was not running")
                item.status = COMPLETED
                missed += 1
            self._scheduler.apply(desired_of(item))
            applied += 1
        removed = 0
        for listed in self._scheduler.listed():
            if listed["Name"] not in known and now - listed["CreationDate"] > ORPHAN_AGE:
                self._scheduler.delete_names([listed["Name"]])
                removed += 1
        return {"applied": applied, "missed": missed, "removed": removed}
