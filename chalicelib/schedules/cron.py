"""Unix cron for users, EventBridge Scheduler cron for AWS: parsing, translation, fire times (no IO).

Users write Vixie/ISC 5-field cron. EventBridge Scheduler runs `cron(min hour dom month dow year)`,
where one of the two day fields must be `?` and day-of-week counts 1-7 from Sunday. Vixie cron
matches a day on day-of-month OR day-of-week, unless one of those fields starts with `*`, in which
case it needs both (AND). The OR case becomes two AWS expressions; the AND case of two restricted
day fields has no AWS form and is rejected.
"""
from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone as dt_timezone
from itertools import groupby, islice, takewhile
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

MAX_EXPRESSION = 256  # EventBridge Scheduler's limit on a schedule expression
# The longest gap between two fires of a Unix expression: Feb 29 skips 2100 (2096 -> 2104).
HORIZON = timedelta(days=366 * 8)

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_LONGEST_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
UNIX_FIELDS = "minute hour day-of-month month day-of-week"
MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}

_ITEM = re.compile(r"(?P<start>\*|\d+|[a-z]+)(?:-(?P<end>\d+|[a-z]+))?(?:/(?P<step>\d+))?")
_NAME = re.compile("|".join(MONTH_NAMES + DAY_NAMES))
_UNSUPPORTED = re.compile(r"[lwh#?]")
_AWS_CRON = re.compile(r"cron\((.*)\)")
_AWS_AT = re.compile(r"at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)")


class CronError(ValueError):
    """A cron expression that is invalid or that the scheduler cannot run; str() is for the user."""


@dataclass(frozen=True)
class _Field:
    """The bounds and names of one cron field."""

    name: str
    low: int
    high: int  # the highest value a `*` or `N/STEP` reaches
    names: dict[str, int] = field(default_factory=dict)
    aliases: dict[int, int] = field(default_factory=dict)  # accepted values beyond `high`

    @property
    def limit(self) -> int:
        return max([self.high, *self.aliases])

    @property
    def full(self) -> frozenset[int]:
        return frozenset(range(self.low, self.high + 1))

    def fold(self, value: int) -> int:
        return self.aliases.get(value, value)

    def allowed(self) -> str:
        names = f" or {self.names_range()}" if self.names else ""
        return f"{self.low}-{self.limit}{names}"

    def names_range(self) -> str:
        ordered = sorted(self.names, key=self.names.__getitem__)
        return f"{ordered[0].upper()}-{ordered[-1].upper()}"


MINUTE = _Field("minute", 0, 59)
HOUR = _Field("hour", 0, 23)
DAY = _Field("day-of-month", 1, 31)
MONTH = _Field("month", 1, 12, {name: n for n, name in enumerate(MONTH_NAMES, 1)})
WEEKDAY = _Field("day-of-week", 0, 6, {name: n for n, name in enumerate(DAY_NAMES)}, {7: 0})
AWS_WEEKDAY = _Field("day-of-week", 1, 7, {name: n for n, name in enumerate(DAY_NAMES, 1)})
YEAR = _Field("year", 1970, 2199)


@dataclass(frozen=True)
class UnixCron:
    """A parsed Unix cron expression: the value sets of its fields and Vixie's star flags."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_star: bool
    dow_star: bool


# --- Unix cron -------------------------------------------------------------------------------

def parse_unix(expression: str) -> UnixCron:
    """Parse a 5-field Unix cron expression or macro, rejecting what the scheduler cannot run."""
    text = expression.strip()
    fields = _unix_fields(text)
    for name, value in zip(("day-of-month", "day-of-week"), (fields[2], fields[4])):
        if "*" in value and not value.startswith("*"):
            # croniter and Vixie cron disagree on such a field; a leading '*' is the only safe place.
            raise CronError(f"The {name} field '{value}' has '*' after its start: "
                            f"'*' may only begin a day field.")
    minutes, hours, days, months, weekdays = (
        _unix_field(value, spec) for value, spec in zip(fields, (MINUTE, HOUR, DAY, MONTH, WEEKDAY)))
    if not croniter.is_valid(text):
        raise CronError(f"'{text}' is not a valid cron expression.")
    cron = UnixCron(text, minutes, hours, days, months, weekdays,
                    dom_star=fields[2].startswith("*"), dow_star=fields[4].startswith("*"))
    dom, dow = _day_sets(cron)  # raises if the scheduler cannot express its days
    if dom is not None and dow is None and not _dom_fires(dom, months):
        raise CronError(f"'{text}' never fires: day-of-month '{fields[2]}' does not occur "
                        f"in month '{fields[3]}'.")
    return cron


def _unix_fields(text: str) -> list[str]:
    if not text:
        raise CronError(f"The cron expression is empty: 5 fields are expected: {UNIX_FIELDS}.")
    if text.startswith("@"):
        macro = MACROS.get(text.lower())
        if macro is None:
            raise CronError(f"'{text}' is not supported: use 5 fields ({UNIX_FIELDS}) "
                            f"or one of {', '.join(MACROS)}.")
        return macro.split()
    fields = text.split()
    if len(fields) != 5:
        extra = " (seconds and year fields are not supported)" if len(fields) > 5 else ""
        raise CronError(f"'{text}' has {len(fields)} fields; 5 are expected: {UNIX_FIELDS}{extra}.")
    return fields


def _unix_field(text: str, spec: _Field) -> frozenset[int]:
    lowered = text.lower()
    special = _UNSUPPORTED.search(_NAME.sub("", lowered))
    if special:
        listed = "days" if spec in (DAY, WEEKDAY) else "values"
        raise CronError(f"The {spec.name} field '{text}' uses '{special.group().upper()}': "
                        f"'L', 'W', '#', '?' and 'H' are not supported; list the {listed} instead.")
    values: set[int] = set()
    for item in lowered.split(","):
        values |= _unix_item(item, text, spec)
    return frozenset(values)


def _unix_item(item: str, text: str, spec: _Field) -> set[int]:
    """One list item, as croniter reads it (ranges that wrap, N/STEP = N-max/STEP, 7 = Sunday)."""
    match = _ITEM.fullmatch(item)
    if match is None or (match["start"] == "*" and match["end"]):
        raise CronError(f"The {spec.name} field '{text}' is not valid: use values ({spec.allowed()}), "
                        f"ranges 'a-b', lists 'a,b' and steps '*/n'.")
    step = _step(match["step"], text, spec)
    if match["start"] == "*":
        return set(range(spec.low, spec.high + 1, step or 1))
    first = _value(match["start"], text, spec)
    if match["end"] is None:
        start = spec.fold(first)
        return set(range(start, spec.high + 1, step)) if step else {start}
    last = _value(match["end"], text, spec)
    if first == last or (first > last and spec.fold(first) == spec.fold(last)):
        # croniter reads such a range as the whole cycle, Vixie cron as one value.
        raise CronError(f"The {spec.name} range '{item}' starts and ends on the same value: "
                        f"write the single value, or '*' for all of them.")
    if first < last:
        return {spec.fold(v) for v in range(first, last + 1, step or 1)}
    if step:
        # croniter's steps across the wrap are off by one for some ranges: no safe meaning.
        raise CronError(f"The {spec.name} range '{item}' wraps around and has a step: "
                        f"list the values instead.")
    return {spec.fold(v) for v in [*range(first, spec.high + 1), *range(spec.low, last + 1)]}


def _step(token: str | None, text: str, spec: _Field) -> int | None:
    if token is None:
        return None
    if int(token) < 1:
        raise CronError(f"The {spec.name} field '{text}' has step {token}: a step must be at least 1.")
    return int(token)


def _value(token: str, text: str, spec: _Field) -> int:
    if token.isdigit():
        value = int(token)
    elif token in spec.names:
        return spec.names[token]
    else:
        raise CronError(f"The {spec.name} field '{text}' has an unknown name '{token.upper()}': "
                        f"allowed are {spec.allowed()}.")
    if not spec.low <= value <= spec.limit:
        raise CronError(f"The {spec.name} field '{text}' has {value}, which is out of range: "
                        f"allowed are {spec.allowed()}.")
    return value


def _day_sets(cron: UnixCron) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """The day-of-month and day-of-week sets a day must match (None: any); when both, either one."""
    dom = None if cron.days == DAY.full else cron.days
    dow = None if cron.weekdays == WEEKDAY.full else cron.weekdays
    if not (cron.dom_star or cron.dow_star):
        # OR: a side that matches every day makes every day match.
        return (None, None) if dom is None or dow is None else (dom, dow)
    if dom is not None and dow is not None:
        raise CronError(
            f"'{cron.expression}' cannot be scheduled: because a day field starts with '*', cron "
            f"runs it only on days that match both day-of-month and day-of-week, and the scheduler "
            f"cannot combine the two. Write the days without '*' (for example '1-31/2' instead of "
            f"'*/2') to run on days matching either field, or restrict only one of them.")
    return dom, dow


def _dom_fires(days: frozenset[int], months: frozenset[int]) -> bool:
    return min(days) <= max(_LONGEST_MONTH[m] for m in months)


def to_aws(cron: UnixCron) -> list[str]:
    """The EventBridge Scheduler cron expressions whose fire times together are the cron's.

    Raises CronError when the cron ANDs two restricted day fields (parse_unix refuses those).
    """
    head = f"{_aws_list(cron.minutes, MINUTE)} {_aws_list(cron.hours, HOUR)}"
    month = _aws_list(cron.months, MONTH)
    dom, dow = _day_sets(cron)
    day_pairs = []
    if dom is not None and (dow is None or _dom_fires(dom, cron.months)):
        day_pairs.append((_aws_list(dom, DAY), "?"))
    if dow is not None:
        day_pairs.append(("?", _aws_list(frozenset(d + 1 for d in dow), AWS_WEEKDAY)))
    expressions = [f"cron({head} {dom_text} {month} {dow_text} *)"
                   for dom_text, dow_text in day_pairs or [("*", "?")]]
    # Lists without runs of 3 are the longest a field gets: at most 240 characters in all.
    assert all(len(expression) <= MAX_EXPRESSION for expression in expressions), expressions
    return expressions


def _aws_list(values: frozenset[int], spec: _Field) -> str:
    """`*` for the full set, else a comma list with runs of 3+ values written `a-b`."""
    if values == spec.full:
        return "*"
    runs: list[list[int]] = []
    for value in sorted(values):
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    parts = [f"{a}-{b}" if b - a >= 2 else ",".join(map(str, range(a, b + 1))) for a, b in runs]
    return ",".join(parts)


# --- EventBridge Scheduler expressions -------------------------------------------------------

@dataclass(frozen=True)
class _AwsCron:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int] | None  # None: '?'
    months: frozenset[int]
    weekdays: frozenset[int] | None  # AWS numbers, 1 = Sunday; None: '?'
    years: frozenset[int]

    def runs_on(self, day: date) -> bool:
        if day.year not in self.years or day.month not in self.months:
            return False
        if self.days is not None:
            return day.day in self.days
        return day.isoweekday() % 7 + 1 in self.weekdays


def aws_at(instant: datetime) -> str:
    """The one-time schedule expression `at(...)` for an aware datetime, written in UTC."""
    if instant.tzinfo is None:
        raise ValueError("aws_at needs an aware datetime")
    return f"at({instant.astimezone(dt_timezone.utc):%Y-%m-%dT%H:%M:%S})"


def aws_fires(expressions: list[str], timezone: str, after: datetime, count: int | None = None,
              until: datetime | None = None) -> list[datetime]:
    """When EventBridge Scheduler fires these expressions in `timezone`: UTC instants after `after`.

    Wall-clock times skipped by a spring-forward do not fire; times repeated by a fall-back fire
    once, at their first occurrence. at() times are wall-clock times in `timezone` too. Stops at
    `count` instants or at `until` (inclusive); an expression silent for 8 years stops there.
    """
    if after.tzinfo is None or (until is not None and until.tzinfo is None):
        raise ValueError("aws_fires needs aware datetimes")
    if count is None and until is None:
        raise ValueError("aws_fires needs a count or an until bound")
    zone = _zone(timezone)
    streams = [_fires(_parse_aws(expression), zone, after) for expression in expressions]
    # groupby drops the same instant from two expressions (the OR split fires twice on some days).
    merged = (instant for instant, _ in groupby(heapq.merge(*streams)))
    bounded = merged if until is None else takewhile(lambda instant: instant <= until, merged)
    return list(islice(bounded, count))


def matches(expressions: list[str], timezone: str, instant: datetime) -> bool:
    """Whether the aware `instant` is one of the expressions' fire times in `timezone`."""
    return aws_fires(expressions, timezone, instant - timedelta(microseconds=1),
                     count=1, until=instant) == [instant]


def next_runs(expression: str, timezone: str, after: datetime, count: int = 5) -> list[datetime]:
    """The next `count` fire times (UTC) of a Unix cron expression scheduled in `timezone`."""
    return aws_fires(to_aws(parse_unix(expression)), timezone, after, count=count)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError(f"Unknown time zone '{name}': use an IANA name such as 'Europe/Paris'.") from exc


def _parse_aws(expression: str) -> _AwsCron | datetime:
    """An AWS cron expression, or the naive wall-clock datetime of an at() expression."""
    at = _AWS_AT.fullmatch(expression)
    if at:
        try:
            return datetime.fromisoformat(at[1])
        except ValueError as exc:
            raise CronError(f"'{expression}' is not a valid date and time.") from exc
    cron = _AWS_CRON.fullmatch(expression)
    fields = cron[1].split() if cron else []
    if len(fields) != 6:
        raise CronError(f"'{expression}' is not a schedule expression cron(...) of 6 fields or at(...).")
    if (fields[2] == "?") == (fields[4] == "?"):
        raise CronError(f"'{expression}' needs '?' in exactly one of day-of-month and day-of-week.")
    specs = (MINUTE, HOUR, DAY, MONTH, AWS_WEEKDAY, YEAR)
    minutes, hours, days, months, weekdays, years = (
        None if text == "?" and spec in (DAY, AWS_WEEKDAY) else _aws_field(text, spec, expression)
        for text, spec in zip(fields, specs))
    return _AwsCron(tuple(sorted(minutes)), tuple(sorted(hours)), days, months, weekdays, years)


def _aws_field(text: str, spec: _Field, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.lower().split(","):
        match = _ITEM.fullmatch(item)
        if match is None or (match["start"] == "*" and match["end"]):
            raise CronError(f"'{expression}': the {spec.name} field '{text}' is not supported.")
        if match["start"] == "*":
            first, last = spec.low, spec.high
        else:
            first = _value(match["start"], text, spec)
            implied = spec.high if match["step"] else first
            last = _value(match["end"], text, spec) if match["end"] else implied
        step = _step(match["step"], text, spec) or 1
        if first > last:
            raise CronError(f"'{expression}': the {spec.name} range '{item}' is reversed.")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _fires(parsed: _AwsCron | datetime, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Fire instants in UTC after `after`, ascending (fold=0 keeps wall-clock order monotonic)."""
    if isinstance(parsed, datetime):
        instant = _instant(parsed, zone)
        if instant is not None and instant > after:
            yield instant
        return
    day = after.astimezone(zone).date()
    give_up = day + HORIZON
    while day <= give_up:
        if parsed.runs_on(day):
            for hour in parsed.hours:
                for minute in parsed.minutes:
                    instant = _instant(datetime.combine(day, time(hour, minute)), zone)
                    if instant is not None and instant > after:
                        give_up = day + HORIZON
                        yield instant
        day += timedelta(days=1)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime | None:
    """The UTC instant of a wall-clock time: its first occurrence, or None if the clocks skip it."""
    instant = wall.replace(tzinfo=zone).astimezone(dt_timezone.utc)
    if instant.astimezone(zone).replace(tzinfo=None) != wall:
        return None
    return instant
