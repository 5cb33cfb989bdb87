"""Local mode's EventBridge Scheduler: the emulator stores schedules but never fires them.

A tick reads the schedules of the group from the emulator, works out each one's next fire time
from its own expression (cron(...) or at(...), in its time zone, with Scheduler's DST rules) and,
at that time, invokes the target -- the same trigger handler Lambda would run -- with the input
Scheduler would send. One-time schedules are deleted after their fire, as ActionAfterCompletion
DELETE does on AWS.
"""
from __future__ import annotations

import json
import logging
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from botocore.exceptions import ClientError

from chalicelib.schedules import cron

logger = logging.getLogger("runner.local.scheduler")

# Lambda retries a failed asynchronous invocation twice; so do we, sooner.
RETRY_DELAYS = (1.0, 5.0)
# After a restart, fires older than this are not replayed.
CATCH_UP = timedelta(seconds=5)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Entry:
    """One Scheduler schedule as the tick tracks it."""

    name: str
    arn: str
    modified: Any
    expression: str
    timezone: str
    target: dict
    delete_after: bool
    next_fire: datetime | None = None


class LocalScheduler:
    """Fires the emulator's schedules of one group by calling `invoke(target_input)`."""

    def __init__(self, scheduler: Any, group: str, target_arn: str, invoke: Callable[[dict], Any],
                 refresh_seconds: float = 1.0, clock: Callable[[], datetime] = _utcnow) -> None:
        self._scheduler = scheduler
        self._group = group
        self._target_arn = target_arn
        self._invoke = invoke
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._entries: dict[str, Entry] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-scheduler", daemon=True)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="schedule-fire")
        self.lateness: list[float] = []  # seconds from fire time to invocation
        self.durations: list[float] = []  # seconds the trigger took

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.lateness:
            logger.info("local scheduler: %d fires, lateness median %.3f s, max %.3f s; trigger median %.3f s, "
                        "max %.3f s", len(self.lateness), statistics.median(self.lateness), max(self.lateness),
                        statistics.median(self.durations or [0]), max(self.durations or [0]))

    # --- the tick ---------------------------------------------------------------------------

    def _run(self) -> None:
        next_refresh = self._clock()
        while not self._stop.is_set():
            now = self._clock()
            if now >= next_refresh:
                try:
                    self.refresh(now)
                except Exception:  # noqa: BLE001 - the emulator may be stopping; try again next tick
                    logger.exception("could not read the schedules")
                next_refresh = now + timedelta(seconds=self._refresh_seconds)
            self.fire_due(now)
            upcoming = [entry.next_fire for entry in self._entries.values() if entry.next_fire is not None]
            wake = min([next_refresh, *upcoming])
            self._stop.wait(max(0.005, min((wake - self._clock()).total_seconds(), self._refresh_seconds)))

    def refresh(self, now: datetime) -> None:
        """Read the group's schedules; track new and changed ones, forget deleted ones."""
        listed: dict[str, Any] = {}
        for page in self._scheduler.get_paginator("list_schedules").paginate(GroupName=self._group):
            for summary in page.get("Schedules", []):
                listed[summary["Name"]] = summary.get("LastModificationDate")
        for name in set(self._entries) - set(listed):
            del self._entries[name]
        for name, modified in listed.items():
            known = self._entries.get(name)
            if known is not None and known.modified == modified:
                continue
            entry = self._describe(name, modified)
            if entry is None:
                continue
            created = modified if isinstance(modified, datetime) else now
            entry.next_fire = self._next(entry, max(now - CATCH_UP, min(now, created)) - timedelta(microseconds=1))
            self._entries[name] = entry

    def _describe(self, name: str, modified: Any) -> Entry | None:
        try:
            found = self._scheduler.get_schedule(Name=name, GroupName=self._group)
        except ClientError:
            return None
        if found.get("State") != "ENABLED" or found["Target"].get("Arn") != self._target_arn:
            return None
        return Entry(name, found.get("Arn", name), modified, found["ScheduleExpression"], found.get("ScheduleExpressionTimezone") or "UTC",
                     found["Target"], found.get("ActionAfterCompletion") == "DELETE")

    def _next(self, entry: Entry, after: datetime) -> datetime | None:
        try:
            fires = cron.aws_fires([entry.expression], entry.timezone, after, count=1)
        except (cron.CronError, ValueError):
            logger.error("schedule %s has an expression this stand-in cannot read: %s", entry.name, entry.expression)
            return None
        return fires[0] if fires else None

    def fire_due(self, now: datetime) -> None:
        """Invoke the target of every schedule whose fire time has come."""
        for entry in list(self._entries.values()):
            if entry.next_fire is None or entry.next_fire > now:
                continue
            fire_time = entry.next_fire
            self._pool.submit(self._deliver, entry, fire_time)
            entry.next_fire = self._next(entry, fire_time)
            if entry.next_fire is None and entry.delete_after:
                self._delete(entry.name)
                self._entries.pop(entry.name, None)

    def _delete(self, name: str) -> None:
        try:
            self._scheduler.delete_schedule(Name=name, GroupName=self._group)
        except ClientError:
            pass

    def _deliver(self, entry: Entry, fire_time: datetime) -> None:
        self.lateness.append((self._clock() - fire_time).total_seconds())
        text = entry.target.get("Input", "{}")
        for placeholder, value in (("<aws.scheduler.scheduled-time>", fire_time.strftime("%Y-%m-%dT%H:%M:%SZ")),
                                   ("<aws.scheduler.execution-id>", str(uuid.uuid4())),
                                   ("<aws.scheduler.schedule-arn>", entry.arn)):
            text = text.replace(placeholder, value)
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            if delay and self._stop.wait(delay):
                return
            try:
                began = time.perf_counter()
                self._invoke(json.loads(text.replace("<aws.scheduler.attempt-number>", str(attempt + 1))))
                self.durations.append(time.perf_counter() - began)
                return
            except Exception:  # noqa: BLE001 - Lambda would retry an invocation that raised
                logger.exception("schedule %s: the trigger failed (attempt %d)", entry.name, attempt + 1)

