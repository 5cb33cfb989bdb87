"""Unix cron -> EventBridge Scheduler cron: the translation fires exactly when Vixie cron would."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from croniter import CroniterBadDateError, croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chalicelib.schedules import cron as cron_module
from chalicelib.schedules.cron import (CronError, aws_at, aws_fires, matches, next_runs, parse_unix,
                             to_aws)

UTC = timezone.utc
START = datetime(2027, 1, 1, tzinfo=UTC)
END = datetime(2028, 1, 1, tzinfo=UTC)
AWS_CRON = re.compile(r"cron\(([0-9,*-]+) ([0-9,*-]+) ([0-9,*-]+|\?) ([0-9,*-]+) ([1-7,*-]+|\?) \*\)")
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
ODD_DAYS = ",".join(str(day) for day in range(1, 32, 2))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def croniter_fires(expression: str, start: datetime, end: datetime) -> list[datetime]:
    """The oracle: Vixie cron's fire times in (start, end]."""
    iterator = croniter(expression, start, implement_cron_bug=True)
    fires = []
    try:
        while (instant := iterator.get_next(datetime)) <= end:
            fires.append(instant)
    except CroniterBadDateError:
        pass
    return fires


def rejection(expression: str) -> str:
    with pytest.raises(CronError) as caught:
        parse_unix(expression)
    return str(caught.value)


# --- generated expressions against croniter ---------------------------------------------------

@st.composite
def field_values(draw, low: int, high: int, names: list[str] | None = None) -> tuple[int, str]:
    """A value of a field, written as a number or (where the field has them) a name in any case."""
    value = draw(st.integers(low, high))
    if names and value < len(names) + low and draw(st.booleans()):
        spell = draw(st.sampled_from([str.upper, str.lower, str.title]))
        return value, spell(names[value - low])
    return value, str(value)


@st.composite
def plain_items(draw, low: int, high: int, names: list[str] | None = None) -> str:
    """An item that does not start with '*': N, N-M (wrapping when M < N), N-M/S or N/S."""
    first, first_text = draw(field_values(low, high, names))
    last, last_text = draw(field_values(low, high, names))
    kind = draw(st.sampled_from(["value", "range", "wrap", "stepped", "start_step"]))
    folded = {first % 7, last % 7} if high == 7 else {first, last}  # 7 and 0 are both Sunday
    if kind == "range" and first < last:
        return f"{first_text}-{last_text}"
    if kind == "wrap" and first > last and len(folded) == 2:
        return f"{first_text}-{last_text}"
    if kind == "stepped" and first < last:
        return f"{first_text}-{last_text}/{draw(st.integers(1, high - low + 1))}"
    if kind == "start_step":
        return f"{first_text}/{draw(st.integers(1, high - low + 1))}"
    return first_text


def day_fields(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    """A fully general day or month field: lists of items, optionally led by '*' or '*/S'."""
    star = st.sampled_from(["*"]) | st.integers(1, high - low + 1).map(lambda step: f"*/{step}")
    plain = st.lists(plain_items(low, high, names), min_size=1, max_size=3)
    return st.one_of(
        plain.map(",".join),
        star,
        st.tuples(star, plain).map(lambda parts: ",".join([parts[0], *parts[1]])),
    )


def small_fields(high: int, min_step: int) -> st.SearchStrategy[str]:
    """Minutes or hours with few values, so that a year holds at most a few thousand fires."""
    values = st.lists(st.integers(0, high), min_size=1, max_size=2, unique=True)
    step = st.integers(min_step, high)
    return st.one_of(
        values.map(lambda chosen: ",".join(map(str, chosen))),
        step.map(lambda s: f"*/{s}"),
        st.tuples(st.integers(0, high), step).map(lambda parts: f"{parts[0]}/{parts[1]}"),
    )


unix_expressions = st.tuples(
    small_fields(59, 20), small_fields(23, 8),
    day_fields(1, 31), day_fields(1, 12, MONTHS), day_fields(0, 7, DAYS),
).map(" ".join)


@settings(max_examples=100, deadline=None, database=None)
@given(unix_expressions)
def test_aws_expressions_fire_exactly_when_vixie_cron_fires(expression):
    # GIVEN an expression from the whole grammar
    try:
        cron = parse_unix(expression)
    except CronError as error:
        # The AND of two restricted day fields has no AWS form; the only other refusal of a
        # grammatical expression is one that never fires.
        assume("cannot be scheduled" not in str(error))
        assert "never fires" in str(error)
        assert croniter_fires(expression, START, END) == []
        return
    # WHEN it is translated and the AWS expressions are evaluated for a year
    expressions = to_aws(cron)
    # THEN they are well-formed AWS cron and fire at exactly the instants cron would
    assert 1 <= len(expressions) <= 2
    assert all(AWS_CRON.fullmatch(expression) for expression in expressions), expressions
    assert aws_fires(expressions, "UTC", START, until=END) == croniter_fires(expression, START, END)


# --- day-of-month and day-of-week --------------------------------------------------------------

def test_restricted_day_fields_split_into_two_expressions_that_fire_once_on_a_shared_day():
    assert to_aws(parse_unix("0 9 1 * MON")) == ["cron(0 9 1 * ? *)", "cron(0 9 ? * 2 *)"]
    # 2027-02-01 is both the 1st and a Monday.
    assert next_runs("0 9 1 * MON", "UTC", utc(2027, 1, 30), count=3) == [
        utc(2027, 2, 1, 9), utc(2027, 2, 8, 9), utc(2027, 2, 15, 9)]


def test_day_fields_anded_by_a_leading_star_are_rejected_when_both_are_restricted():
    message = rejection("0 0 */2 * 1")
    assert "'0 0 */2 * 1' cannot be scheduled" in message
    assert "both day-of-month and day-of-week" in message and "without '*'" in message
    assert "cannot be scheduled" in rejection("0 0 */2 * */3")
    assert "cannot be scheduled" in rejection("0 0 1 * */2")


def test_a_leading_star_that_covers_every_day_leaves_the_other_day_field():
    assert to_aws(parse_unix("0 0 */1 * 1")) == ["cron(0 0 ? * 2 *)"]
    assert to_aws(parse_unix("0 0 1 * */1")) == ["cron(0 0 1 * ? *)"]
    assert to_aws(parse_unix("0 0 */2 * *")) == [f"cron(0 0 {ODD_DAYS} * ? *)"]


def test_day_fields_without_a_leading_star_are_ored():
    assert to_aws(parse_unix("0 0 1-31/2 * 1")) == [f"cron(0 0 {ODD_DAYS} * ? *)", "cron(0 0 ? * 2 *)"]
    # An OR with a side that matches every day runs every day.
    assert to_aws(parse_unix("0 0 1-31 * 1")) == ["cron(0 0 * * ? *)"]
    assert to_aws(parse_unix("0 0 1 * 0-6")) == ["cron(0 0 * * ? *)"]


def test_or_side_that_never_fires_is_left_out():
    assert to_aws(parse_unix("0 0 30 2 MON")) == ["cron(0 0 ? 2 2 *)"]


def test_star_after_the_start_of_a_day_field_is_rejected():
    assert "'1,*'" in rejection("0 0 1,* * 1")
    assert "'1,*/2'" in rejection("0 0 1-31 * 1,*/2")


def test_february_29_fires_in_leap_years_only():
    assert next_runs("0 0 29 2 *", "UTC", START) == [
        utc(2028, 2, 29), utc(2032, 2, 29), utc(2036, 2, 29), utc(2040, 2, 29), utc(2044, 2, 29)]


def test_february_29_skips_2100_and_is_found_eight_years_on():
    assert next_runs("0 0 29 2 *", "UTC", utc(2096, 3, 1), count=1) == [utc(2104, 2, 29)]


# --- daylight saving time ----------------------------------------------------------------------

def test_wall_clock_time_skipped_by_spring_forward_does_not_fire():
    # New York springs forward at 02:00 EST on 2027-03-14: 02:30 does not exist that day.
    assert next_runs("30 2 * * *", "America/New_York", utc(2027, 3, 12), count=3) == [
        utc(2027, 3, 12, 7, 30), utc(2027, 3, 13, 7, 30), utc(2027, 3, 15, 6, 30)]


def test_wall_clock_time_repeated_by_fall_back_fires_once_at_its_first_occurrence():
    # New York falls back at 02:00 EDT on 2027-11-07: 01:30 happens at 05:30Z and 06:30Z.
    assert next_runs("30 1 * * *", "America/New_York", utc(2027, 11, 6), count=3) == [
        utc(2027, 11, 6, 5, 30), utc(2027, 11, 7, 5, 30), utc(2027, 11, 8, 6, 30)]
    assert next_runs("30 2 * * *", "America/New_York", utc(2027, 11, 6, 12), count=2) == [
        utc(2027, 11, 7, 7, 30), utc(2027, 11, 8, 7, 30)]


def test_hourly_schedule_around_both_transitions():
    expressions = to_aws(parse_unix("@hourly"))
    new_york = "America/New_York"
    assert aws_fires(expressions, new_york, utc(2027, 3, 14, 5, 30), count=3) == [
        utc(2027, 3, 14, 6), utc(2027, 3, 14, 7), utc(2027, 3, 14, 8)]  # 01:00 EST, 03:00, 04:00 EDT
    assert aws_fires(expressions, new_york, utc(2027, 11, 7, 4, 30), count=3) == [
        utc(2027, 11, 7, 5), utc(2027, 11, 7, 7), utc(2027, 11, 7, 8)]  # 01:00 EDT, then 02:00 EST
    # Asked from inside the repeated hour, the second 01:00 does not fire either.
    assert aws_fires(expressions, new_york, utc(2027, 11, 7, 5, 30), count=1) == [utc(2027, 11, 7, 7)]


def test_london_transitions():
    # BST starts 2027-03-28 at 01:00 GMT and ends 2027-10-31 at 02:00 BST.
    assert next_runs("30 1 * * *", "Europe/London", utc(2027, 3, 27), count=2) == [
        utc(2027, 3, 27, 1, 30), utc(2027, 3, 29, 0, 30)]
    assert next_runs("30 1 * * *", "Europe/London", utc(2027, 10, 30, 12), count=2) == [
        utc(2027, 10, 31, 0, 30), utc(2027, 11, 1, 1, 30)]


def test_sydney_transitions():
    # AEDT ends 2027-04-04 at 03:00 (-> 02:00 AEST) and starts 2027-10-03 at 02:00 (-> 03:00).
    assert next_runs("30 2 * * *", "Australia/Sydney", utc(2027, 4, 3), count=2) == [
        utc(2027, 4, 3, 15, 30), utc(2027, 4, 4, 16, 30)]
    assert next_runs("30 2 * * *", "Australia/Sydney", utc(2027, 10, 1, 12), count=2) == [
        utc(2027, 10, 1, 16, 30), utc(2027, 10, 3, 15, 30)]


# --- syntax -----------------------------------------------------------------------------------

@pytest.mark.parametrize("expression, fragment", [
    ("0 0 L * *", "'L'"),
    ("0 0 15W * *", "'W'"),
    ("0 0 * * 1#2", "'#'"),
    ("0 0 ? * 1", "'?'"),
    ("H * * * *", "'H'"),
    ("0 0 * * 5L", "'L'"),
    ("0 0 * * * *", "6 fields"),
    ("0 0 * *", "4 fields"),
    ("61 * * * *", "61"),
    ("* 24 * * *", "24"),
    ("0 0 0 * *", "day-of-month field '0'"),
    ("0 0 * 13 *", "month field '13'"),
    ("0 0 * * 8", "day-of-week field '8'"),
    ("0 0 30 2 *", "never fires"),
    ("0 0 31 4,6 *", "never fires"),
    ("@reboot", "'@reboot' is not supported"),
    ("", "empty"),
    ("   ", "empty"),
    ("*/0 * * * *", "step 0"),
    ("0 0 * * MONDAY", "'MONDAY'"),
    ("0 0 * MON *", "'MON'"),
    ("0 0 * * 1-", "'1-'"),
    ("5-5 * * * *", "'5-5'"),
    ("0 0 * * 7-0", "'7-0'"),
    ("50-10/7 * * * *", "'50-10/7'"),
])
def test_rejection_names_the_offending_text(expression, fragment):
    assert fragment in rejection(expression)


def test_rejections_explain_the_alternative():
    assert "'L', 'W', '#', '?' and 'H' are not supported; list the days instead" in rejection("0 0 L * *")
    assert "5 are expected: minute hour day-of-month month day-of-week" in rejection("0 0 * * * *")
    assert "allowed are 0-59" in rejection("61 * * * *")
    assert "allowed are 0-7 or SUN-SAT" in rejection("0 0 * * 8")


def test_expression_croniter_refuses_is_refused(monkeypatch):
    monkeypatch.setattr(cron_module.croniter, "is_valid", lambda expression: False)
    assert "'0 0 * * *' is not a valid cron expression" in rejection("0 0 * * *")


@pytest.mark.parametrize("macro, expected", [
    ("@yearly", "cron(0 0 1 1 ? *)"), ("@annually", "cron(0 0 1 1 ? *)"),
    ("@monthly", "cron(0 0 1 * ? *)"), ("@weekly", "cron(0 0 ? * 1 *)"),
    ("@daily", "cron(0 0 * * ? *)"), ("@midnight", "cron(0 0 * * ? *)"),
    ("@hourly", "cron(0 * * * ? *)"), ("@DAILY", "cron(0 0 * * ? *)"),
])
def test_macros(macro, expected):
    assert to_aws(parse_unix(f" {macro} ")) == [expected]
    assert parse_unix(f" {macro} ").expression == macro


def test_names_in_any_case_and_in_ranges():
    cron = parse_unix("0 0 * JAN-MAR mon-fri")
    assert cron.months == {1, 2, 3} and cron.weekdays == {1, 2, 3, 4, 5}
    assert to_aws(cron) == ["cron(0 0 ? 1-3 2-6 *)"]
    assert to_aws(parse_unix("0 0 * Nov-Feb Sat,sun")) == ["cron(0 0 ? 1,2,11,12 1,7 *)"]


def test_seven_is_sunday():
    cron = parse_unix("0 0 * * 7")
    assert cron.weekdays == {0} and to_aws(cron) == ["cron(0 0 ? * 1 *)"]
    assert parse_unix("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert to_aws(parse_unix("0 0 * * 0-7")) == ["cron(0 0 * * ? *)"]


def test_parsed_fields_and_star_flags():
    cron = parse_unix("*/20 9-17 */10 * *")
    assert cron.minutes == {0, 20, 40} and cron.hours == set(range(9, 18))
    assert cron.days == {1, 11, 21, 31} and cron.months == set(range(1, 13))
    assert cron.weekdays == set(range(7)) and cron.dom_star and cron.dow_star
    assert not parse_unix("0 0 1 * MON").dom_star and not parse_unix("0 0 1 * MON").dow_star


def test_steps_from_a_start_run_to_the_end_of_the_field():
    assert parse_unix("5/20 * * * *").minutes == {5, 25, 45}
    assert parse_unix("0 0 * * 7/2").weekdays == {0, 2, 4, 6}


def test_ranges_that_wrap_around_as_croniter_reads_them():
    assert to_aws(parse_unix("0 22-2 * * *")) == ["cron(0 0-2,22,23 * * ? *)"]
    assert parse_unix("0 0 * * FRI-MON").weekdays == {5, 6, 0, 1}


def test_fields_are_written_as_lists_with_runs_of_three_or_more_as_ranges():
    assert to_aws(parse_unix("0-5,10,12,13 * * * *")) == ["cron(0-5,10,12,13 * * * ? *)"]
    assert to_aws(parse_unix("*/15 0-23 1-31 1-12 *")) == ["cron(0,15,30,45 * * * ? *)"]


# --- AWS expressions ----------------------------------------------------------------------------

def test_aws_at_is_written_in_utc():
    paris = timezone(timedelta(hours=2))
    assert aws_at(datetime(2027, 5, 1, 14, 30, 15, tzinfo=paris)) == "at(2027-05-01T12:30:15)"
    with pytest.raises(ValueError):
        aws_at(datetime(2027, 5, 1))


def test_at_fires_once_at_its_instant():
    expression = aws_at(utc(2027, 5, 1, 12, 30, 15))
    assert aws_fires([expression], "UTC", START, count=5) == [utc(2027, 5, 1, 12, 30, 15)]
    assert aws_fires([expression], "UTC", utc(2027, 5, 1, 12, 30, 15), count=5) == []
    # at() is a wall-clock time of the schedule's time zone, as EventBridge Scheduler reads it.
    assert aws_fires([expression], "Europe/Paris", START, count=5) == [utc(2027, 5, 1, 10, 30, 15)]


def test_matches_only_fire_times():
    expressions = to_aws(parse_unix("0 9 1 * MON"))
    assert matches(expressions, "UTC", utc(2027, 2, 8, 9))
    assert matches(expressions, "UTC", utc(2027, 3, 1, 9))
    assert not matches(expressions, "UTC", utc(2027, 2, 8, 9, 1))
    assert not matches(expressions, "UTC", utc(2027, 2, 8, 8, 59))
    assert matches([aws_at(utc(2027, 5, 1, 12))], "UTC", utc(2027, 5, 1, 12))
    assert not matches(["cron(30 1 * * ? *)"], "America/New_York", utc(2027, 11, 7, 6, 30))


def test_aws_syntax_with_steps_names_and_years():
    fires = aws_fires(["cron(0/20 9 ? JAN MON-WED 2027,2029)"], "UTC", START, count=4)
    assert fires == [utc(2027, 1, 4, 9), utc(2027, 1, 4, 9, 20), utc(2027, 1, 4, 9, 40),
                     utc(2027, 1, 5, 9)]
    assert aws_fires(["cron(0 9 ? JAN MON 2027,2029)"], "UTC", utc(2027, 2, 1), count=1) == [
        utc(2029, 1, 1, 9)]
    assert aws_fires(["cron(*/30 */12 1-2 * ? *)"], "UTC", START, until=utc(2027, 1, 2)) == [
        utc(2027, 1, 1, 0, 30), utc(2027, 1, 1, 12), utc(2027, 1, 1, 12, 30), utc(2027, 1, 2)]


@pytest.mark.parametrize("expression", [
    "cron(0 9 * * * *)", "cron(0 9 ? * ? *)", "cron(0 9 L * ? *)", "cron(0 9 ? * 2#1 *)",
    "cron(0 9 * *)", "rate(5 minutes)", "at(2027-05-01 12:00:00)", "at(2027-02-30T12:00:00)",
    "cron(? 9 * * ? *)", "cron(0 9 ? * FRI-MON *)",
])
def test_unsupported_aws_expressions_are_refused(expression):
    with pytest.raises(CronError):
        aws_fires([expression], "UTC", START, count=1)


def test_an_expression_that_never_fires_gives_no_runs_quickly():
    assert aws_fires(["cron(0 0 30 2 ? *)"], "UTC", START, count=3) == []
    assert aws_fires(["cron(0 0 1 1 ? 2020)"], "UTC", START, count=3) == []


def test_a_year_of_frequent_fires_is_fast():
    # GIVEN an expression firing every two hours, in a zone with DST
    started = datetime.now()
    # WHEN a year of it is evaluated (walking minute by minute would take seconds)
    fires = aws_fires(["cron(0 */2 * * ? *)"], "Europe/Paris", START, until=END)
    # THEN it is 12 fires a day less 02:00 on 2027-03-28, and takes well under a second
    assert len(fires) == 365 * 12 - 1
    assert datetime.now() - started < timedelta(seconds=1)


def test_unknown_time_zone_is_a_clear_error():
    with pytest.raises(CronError, match="Unknown time zone 'Mars/Olympus'"):
        next_runs("0 0 * * *", "Mars/Olympus", START)
