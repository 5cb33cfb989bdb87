"""The body of a job schedule: its trigger (Unix cron or a date), validated and translated."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chalicelib.executions.options import parse_options
from chalicelib.schedules import cron
from chalicelib.platform.errors import InvalidRequest
from chalicelib.auth.service_accounts import validate_alias

CRON, DATE = "cron", "date"
MAX_DESCRIPTION = 1024
# A date further ahead than this is almost surely a typo (and AWS keeps one-time schedules).
MAX_DATE_AHEAD = timedelta(days=366 * 10)


@dataclass(frozen=True)
class Trigger:
    """When a schedule fires: what the user wrote, and the Scheduler expressions it becomes."""

    type: str
    expression: str
    timezone: str
    aws_expressions: tuple[str, ...]

    def render(self) -> dict:
        return {"type": self.type, "expression": self.expression, "timezone": self.timezone}

    @property
    def aws_timezone(self) -> str:
        """The zone the Scheduler reads the expressions in (dates are sent as UTC)."""
        return "UTC" if self.type == DATE else self.timezone

    def same_as(self, other: "Trigger") -> bool:
        return (self.type, self.expression, self.timezone) == (other.type, other.expression, other.timezone)

    def instant(self) -> datetime | None:
        """The fire time of a date trigger (None for cron)."""
        return parse_date(self.expression, self.timezone, "expression") if self.type == DATE else None


@dataclass(frozen=True)
class ScheduleInput:
    """A validated schedule body."""

    description: str
    service_account_alias: str
    trigger: Trigger
    # The options of each fire's execution (chalicelib/executions/options.py).
    options: dict


def _zone(name: Any, field: str) -> str:
    if name is None:
        return "UTC"
    if not isinstance(name, str) or not name or len(name) > 64 or ".." in name or name.startswith("/"):
        raise InvalidRequest(field, "must be an IANA time zone name such as Europe/Paris")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(field, f"{name!r} is not an IANA time zone name (such as Europe/Paris)") from None
    return name


def parse_date(text: str, zone: str, field: str) -> datetime:
    """An ISO 8601 date-time as an aware UTC instant, rounded up to the whole second.

    A value without an offset is read in `zone` (UTC unless the trigger names one).
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(field, f"{text!r} is not an ISO 8601 date-time such as 2030-01-31T09:30:00Z") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(zone))
    value = value.astimezone(timezone.utc)
    if value.microsecond:
        value = value.replace(microsecond=0) + timedelta(seconds=1)
    return value


def format_instant(value: datetime) -> str:
    """UTC ISO 8601 with a Z, to the second: the API's form of a fire time."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_trigger(raw: Any, field: str, now: datetime, allow_past: bool = False) -> Trigger:
    """A trigger object `{type, expression, timezone?}`; dates must lie ahead of `now`."""
    if not isinstance(raw, dict):
        raise InvalidRequest(field, 'must be an object such as {"type": "cron", "expression": "0 3 * * *"}')
    kind = raw.get("type")
    if kind not in (CRON, DATE):
        raise InvalidRequest(f"{field}.type", 'must be "cron" or "date"')
    expression = raw.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidRequest(f"{field}.expression", "is required: a Unix cron expression or an ISO 8601 date-time")
    expression = expression.strip()
    if len(expression) > 256:
        raise InvalidRequest(f"{field}.expression", "must be at most 256 characters")
    zone = _zone(raw.get("timezone"), f"{field}.timezone")
    if kind == CRON:
        try:
            parsed = cron.parse_unix(expression)
            aws = tuple(cron.to_aws(parsed))
        except cron.CronError as error:
            raise InvalidRequest(f"{field}.expression", f"{expression!r}: {error}") from None
        return Trigger(CRON, expression, zone, aws)
    instant = parse_date(expression, zone, f"{field}.expression")
    if not allow_past:
        if instant <= now:
            raise InvalidRequest(f"{field}.expression",
                                 f"{format_instant(instant)} is not in the future (now is {format_instant(now)})")
        if instant - now > MAX_DATE_AHEAD:
            raise InvalidRequest(f"{field}.expression", "must be within 10 years from now")
    return Trigger(DATE, expression, zone, (cron.aws_at(instant),))


def parse_schedule(body: Any, now: datetime, allow_past: bool = False) -> ScheduleInput:
    """Validate `{description, serviceAccountAlias, trigger, options?}`; the reference's `type` names the trigger too."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object with description, serviceAccountAlias and trigger")
    description = body.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise InvalidRequest("description", "must be a string")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidRequest("description", f"must be at most {MAX_DESCRIPTION} characters")
    alias = body.get("serviceAccountAlias")
    if alias is None:
        raise InvalidRequest("serviceAccountAlias", "is required: the service account the schedule runs as")
    validate_alias(alias, "serviceAccountAlias")
    trigger, field = body.get("trigger"), "trigger"
    by_type = body.get("type")
    if isinstance(by_type, dict):  # the reference's examples: {"type": {"type": "cron", "expression": ...}}
        if trigger is not None and trigger != by_type:
            raise InvalidRequest("trigger", "is given twice (as trigger and as type) with different values")
        trigger, field = by_type, "type"
    elif trigger is None and by_type is not None:
        raise InvalidRequest("type", 'must be the trigger object, such as {"type": "cron", "expression": "* * * * *"}')
    if trigger is None:
        raise InvalidRequest("trigger", 'is required, such as {"type": "cron", "expression": "0 3 * * *"}')
    options = body.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidRequest("options", "must be an object of run options such as {\"checkMode\": true}")
    unknown = sorted(set(options) - {"limit", "checkMode", "diffMode", "verbosity", "tags", "skipTags", "extraVars"})
    if unknown:
        raise InvalidRequest(f"options.{unknown[0]}", "is not a run option")
    return ScheduleInput(description, alias, parse_trigger(trigger, field, now, allow_past),
                         parse_options(options, "options."))


def next_fires(trigger: Trigger, after: datetime, count: int = 5) -> list[datetime]:
    """The next fire times of a trigger after `after`, as the Scheduler will fire them."""
    return cron.aws_fires(list(trigger.aws_expressions), trigger.aws_timezone, after, count=count)


def epoch_ms(value: datetime) -> int:
    return int(math.floor(value.timestamp() * 1000))


def from_epoch_ms(value: float) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
