"""Job schedules over the API, kept consistent with EventBridge Scheduler (moto), and their trigger."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from chalicelib.platform import aws
from chalicelib.auth import users
from chalicelib.platform.config import get_settings
from chalicelib.platform.models import Execution, ServiceAccount
from chalicelib.platform.wiring import schedule_service

JOB = {"repository": {"url": "https://github.com/org/repo.git", "defaultPlaybook": "site.yml"},
       "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}]}
ROBOT_PASSWORD = "robot-password-123"


def in_seconds(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def job(client):
    users.create_user("robot@demo", ROBOT_PASSWORD, "DEMO")
    made = client.post("/jobs/DEMO", {"description": "with schedules", **JOB}).body[0]
    assert client.post("/serviceAccounts/DEMO", {"alias": "nightly", "username": "robot@demo",
                                                 "password": ROBOT_PASSWORD}).status == 201
    return made


def base(job: dict) -> str:
    return f"/jobs/DEMO/{job['id']}/schedules"


def schedule_body(expression="0 3 * * *", kind="cron", **extra) -> dict:
    return {"description": "nightly run", "serviceAccountAlias": "nightly",
            "trigger": {"type": kind, "expression": expression, **extra}}


def aws_schedules() -> dict[str, dict]:
    scheduler = aws.client("scheduler")
    group = get_settings().schedule_group
    names = [item["Name"] for item in scheduler.list_schedules(GroupName=group)["Schedules"]]
    return {name: scheduler.get_schedule(Name=name, GroupName=group) for name in names}


def fire(schedule: dict, fire_time: str, name: str | None = None) -> dict:
    """What Scheduler does at a fire time: invoke the trigger function with the target's input."""
    from app import schedule_trigger

    target = aws_schedules()[name or schedule["scheduleId"]]["Target"]
    event = json.loads(target["Input"].replace("<aws.scheduler.scheduled-time>", fire_time))
    return schedule_trigger(event, None)


def executions_of(job: dict) -> list[Execution]:
    return list(Execution.query(job["id"], consistent_read=True))


def sa_count(alias: str = "nightly") -> int:
    return int(ServiceAccount.get("DEMO", alias, consistent_read=True).schedule_count)


# --- create and read ------------------------------------------------------------------------------

def test_create_answers_the_schedule_with_its_next_runs(client, job):
    answer = client.post(base(job), schedule_body("30 2 * * MON-FRI", timezone="Europe/Paris"))
    assert answer.status == 201, answer.body
    body = answer.body
    assert body["jobId"] == job["id"] and body["accountAlias"] == "DEMO"
    assert body["id"] != body["scheduleId"]
    assert body["description"] == "nightly run"
    assert body["serviceAccountAlias"] == "nightly"
    assert body["trigger"] == {"type": "cron", "expression": "30 2 * * MON-FRI", "timezone": "Europe/Paris"}
    assert body["status"] == "ACTIVE"
    runs = [datetime.strptime(run, "%Y-%m-%dT%H:%M:%SZ") for run in body["nextRuns"]]
    assert len(runs) == 5 and runs == sorted(runs)
    assert all(run.minute == 30 and run.hour in (0, 1) and run.weekday() < 5 for run in runs)
    assert client.get(f"{base(job)}/{body['id']}").body == body | {"nextRuns": body["nextRuns"]}
    assert sa_count() == 1


def test_the_scheduler_schedule_fires_the_trigger_exactly_as_asked(client, job):
    body = client.post(base(job), schedule_body("30 2 * * MON-FRI", timezone="Europe/Paris")).body
    held = aws_schedules()
    assert list(held) == [body["scheduleId"]]
    schedule = held[body["scheduleId"]]
    assert schedule["ScheduleExpression"] == "cron(30 2 ? * 2-6 *)"
    assert schedule["ScheduleExpressionTimezone"] == "Europe/Paris"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert schedule["Target"]["Arn"] == get_settings().trigger_function_arn
    assert schedule["Target"]["RoleArn"] == get_settings().scheduler_role_arn
    payload = json.loads(schedule["Target"]["Input"])
    assert payload == {"accountAlias": "DEMO", "jobId": job["id"], "id": body["id"], "scheduleId": body["scheduleId"],
                       "scheduleName": body["scheduleId"], "fireTime": "<aws.scheduler.scheduled-time>"}


def test_the_references_type_form_is_accepted_and_answered_as_trigger(client, job):
    answer = client.post(base(job), {"description": "Job Schedule demo.", "serviceAccountAlias": "nightly",
                                     "type": {"type": "cron", "expression": "* * * * *"}})
    assert answer.status == 201, answer.body
    assert answer.body["trigger"] == {"type": "cron", "expression": "* * * * *", "timezone": "UTC"}
    assert "type" not in answer.body


def test_list_pages_newest_first(client, job):
    ids = [client.post(base(job), schedule_body(f"{minute} 3 * * *")).body["id"] for minute in range(3)]
    page = client.get(f"{base(job)}?page=0&size=2").body
    assert page["totalSize"] == 3 and page["page"] == 0 and page["size"] == 2
    assert [item["id"] for item in page["results"]] == ids[::-1][:2]
    assert [item["id"] for item in client.get(f"{base(job)}?page=1&size=2").body["results"]] == ids[:1]
    assert client.get(f"{base(job)}?size=0").status == 400


def test_a_cron_that_ors_its_day_fields_becomes_two_scheduler_schedules(client, job):
    body = client.post(base(job), schedule_body("0 9 1 * MON")).body
    held = aws_schedules()
    assert {name: item["ScheduleExpression"] for name, item in held.items()} == {
        body["scheduleId"]: "cron(0 9 1 * ? *)", f"{body['scheduleId']}-2": "cron(0 9 ? * 2 *)"}
    # 2027-03-01 is a Monday and the 1st: both schedules fire; the job runs once.
    first = fire(body, "2027-03-01T09:00:00Z")
    second = fire(body, "2027-03-01T09:00:00Z", name=f"{body['scheduleId']}-2")
    assert first["outcome"] == "started" and second["outcome"] == "duplicate"
    assert len(executions_of(job)) == 1


# --- validation --------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, field, words", [
    (schedule_body("61 * * * *"), "trigger.expression", "61 * * * *"),
    (schedule_body("* * * *"), "trigger.expression", "5"),
    (schedule_body("0 0 L * *"), "trigger.expression", "L"),
    (schedule_body("0 0 * * 1#2"), "trigger.expression", "#"),
    (schedule_body("2020-01-01T00:00:00Z", kind="date"), "trigger.expression", "future"),
    (schedule_body("tomorrow", kind="date"), "trigger.expression", "ISO 8601"),
    (schedule_body(timezone="Mars/Olympus"), "trigger.timezone", "Mars/Olympus"),
    (schedule_body(kind="weekly"), "trigger.type", "cron"),
    ({"description": "x", "serviceAccountAlias": "nightly"}, "trigger", "required"),
    ({"description": "x", "trigger": {"type": "cron", "expression": "* * * * *"}}, "serviceAccountAlias", "required"),
    ({**schedule_body(), "serviceAccountAlias": "ghost"}, "serviceAccountAlias", "ghost"),
    ({"serviceAccountAlias": "nightly", "type": {"type": "date", "expression": "2001-01-01T00:00:00Z"}},
     "type.expression", "future"),
])
def test_bad_bodies_are_400_naming_the_field_and_leave_nothing_behind(client, job, body, field, words):
    answer = client.post(base(job), body)
    assert answer.status == 400, answer.body
    assert answer.body["field"] == field
    assert words in answer.body["message"]
    assert aws_schedules() == {}
    assert client.get(base(job)).body["totalSize"] == 0


def test_missing_job_or_schedule_is_404_and_other_accounts_403(client, job):
    assert client.post("/jobs/DEMO/no-such-job/schedules", schedule_body()).status == 404
    assert client.get(f"{base(job)}/no-such-schedule").status == 404
    assert client.put(f"{base(job)}/no-such-schedule", schedule_body()).status == 404
    assert client.delete(f"{base(job)}/no-such-schedule").status == 404
    created = client.post(base(job), schedule_body()).body
    assert client.other.get(f"{base(job)}/{created['id']}").status == 403
    assert client.other.get(f"/jobs/OTHER/{job['id']}/schedules/{created['id']}").status == 404
    assert aws_schedules() != {}


# --- update and delete -------------------------------------------------------------------------------

def test_update_changes_the_next_runs_and_the_scheduler_schedule(client, job):
    created = client.post(base(job), schedule_body("0 3 * * *")).body
    users.create_user("robot2@demo", ROBOT_PASSWORD, "DEMO")
    client.post("/serviceAccounts/DEMO", {"alias": "weekly", "username": "robot2@demo", "password": ROBOT_PASSWORD})
    updated = client.put(f"{base(job)}/{created['id']}", {**schedule_body("15 4 * * *"), "serviceAccountAlias": "weekly"})
    assert updated.status == 200, updated.body
    assert updated.body["nextRuns"] != created["nextRuns"]
    assert all(run.endswith("T04:15:00Z") for run in updated.body["nextRuns"])
    assert aws_schedules()[created["scheduleId"]]["ScheduleExpression"] == "cron(15 4 * * ? *)"
    assert (sa_count("nightly"), sa_count("weekly")) == (0, 1)
    # From one Scheduler schedule to two and back.
    client.put(f"{base(job)}/{created['id']}", schedule_body("0 9 1 * MON"))
    assert len(aws_schedules()) == 2
    client.put(f"{base(job)}/{created['id']}", schedule_body("0 9 * * *"))
    assert list(aws_schedules()) == [created["scheduleId"]]


def test_delete_removes_the_scheduler_schedules_and_frees_the_service_account(client, job):
    created = client.post(base(job), schedule_body("0 9 1 * MON")).body
    assert client.delete("/serviceAccounts/DEMO/nightly").status == 409
    assert client.delete(f"{base(job)}/{created['id']}").status == 204
    assert aws_schedules() == {}
    assert client.get(f"{base(job)}/{created['id']}").status == 404
    assert client.delete("/serviceAccounts/DEMO/nightly").status == 204


def test_deleting_the_job_deletes_its_schedules(client, job):
    for minute in range(3):
        client.post(base(job), schedule_body(f"{minute} 9 1 * MON"))
    assert len(aws_schedules()) == 6
    assert client.delete(f"/jobs/DEMO/{job['id']}").status == 204
    assert aws_schedules() == {}
    assert sa_count() == 0
    assert client.delete("/serviceAccounts/DEMO/nightly").status == 204


# --- consistency when a step fails -------------------------------------------------------------------

def test_a_scheduler_failure_halfway_leaves_no_schedule_anywhere(client, job):
    scheduler = aws.client("scheduler")
    calls = []

    def fail_second_create(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise ClientError({"Error": {"Code": "ServiceQuotaExceededException", "Message": "quota"}}, "CreateSchedule")

    scheduler.meta.events.register("before-call.scheduler.CreateSchedule", fail_second_create)
    try:
        answer = client.post(base(job), schedule_body("0 9 1 * MON"))
    finally:
        scheduler.meta.events.unregister("before-call.scheduler.CreateSchedule", fail_second_create)
    assert answer.status >= 500
    assert aws_schedules() == {}
    assert client.get(base(job)).body["totalSize"] == 0
    assert sa_count() == 0


def test_a_store_failure_after_the_scheduler_step_removes_the_scheduler_schedules(client, job):
    # The service account disappears between the check and the transaction (a concurrent delete).
    scheduler = aws.client("scheduler")

    def delete_the_service_account(**kwargs):
        ServiceAccount("DEMO", "nightly").delete()

    scheduler.meta.events.register("after-call.scheduler.CreateSchedule", delete_the_service_account)
    try:
        answer = client.post(base(job), schedule_body("0 3 * * *"))
    finally:
        scheduler.meta.events.unregister("after-call.scheduler.CreateSchedule", delete_the_service_account)
    assert answer.status == 400 and answer.body["field"] == "serviceAccountAlias"
    assert aws_schedules() == {}
    assert client.get(base(job)).body["totalSize"] == 0


def test_reconcile_recreates_lost_scheduler_schedules_and_removes_orphans(client, job):
    created = client.post(base(job), schedule_body("0 9 1 * MON")).body
    scheduler = aws.client("scheduler")
    scheduler.delete_schedule(Name=created["scheduleId"], GroupName=get_settings().schedule_group)
    outcome = schedule_service().reconcile()
    assert outcome["applied"] == 1
    assert len(aws_schedules()) == 2


# --- the trigger -------------------------------------------------------------------------------------

def test_a_date_schedule_fires_once_then_reports_itself_completed(client, job):
    when = in_seconds(3600)
    created = client.post(base(job), schedule_body(when, kind="date")).body
    assert created["nextRuns"] == [when]
    assert aws_schedules()[created["scheduleId"]]["ScheduleExpression"] == f"at({when[:-1]})"
    assert fire(created, when)["outcome"] == "started"
    assert fire(created, when)["outcome"] in ("duplicate", "completed")
    runs = executions_of(job)
    assert len(runs) == 1
    assert runs[0].started_by == created["id"]
    got = client.get(f"{base(job)}/{created['id']}").body
    assert got["status"] == "COMPLETED" and got["nextRuns"] == []
    assert got["lastRun"]["executionId"] == runs[0].execution_id
    execution = client.get(f"/jobs/DEMO/{job['id']}/executions/{runs[0].execution_id}").body
    assert execution["started_by"] == created["id"]
    assert execution["scheduled_time"] == int(datetime.strptime(when, "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)


def test_a_fire_at_a_time_the_trigger_does_not_have_starts_nothing(client, job):
    created = client.post(base(job), schedule_body("0 3 * * *")).body
    assert fire(created, "2027-01-01T04:00:00Z")["outcome"] == "stale"
    assert fire(created, "2027-01-01T03:00:00Z")["outcome"] == "started"
    assert len(executions_of(job)) == 1


def test_a_fire_of_a_deleted_schedule_starts_nothing(client, job):
    created = client.post(base(job), schedule_body("0 3 * * *")).body
    target = aws_schedules()[created["scheduleId"]]["Target"]
    client.delete(f"{base(job)}/{created['id']}")
    from app import schedule_trigger

    event = json.loads(target["Input"].replace("<aws.scheduler.scheduled-time>", "2027-01-01T03:00:00Z"))
    assert schedule_trigger(event, None)["outcome"].startswith("orphan")
    assert executions_of(job) == []


def test_a_service_account_whose_password_changed_runs_nothing_and_says_why(client, job):
    created = client.post(base(job), schedule_body("0 3 * * *")).body
    users.create_user("robot@demo", "a-new-password-42", "DEMO", replace=True)
    assert fire(created, "2027-01-01T03:00:00Z")["outcome"] == "unauthenticated"
    assert executions_of(job) == []
    got = client.get(f"{base(job)}/{created['id']}").body
    assert "nightly" in got["lastError"] and "log in" in got["lastError"]
    assert got["lastErrorTime"]
    assert ROBOT_PASSWORD not in json.dumps(got)
    # Fixed credentials: the next fire runs and clears the error.
    client.put("/serviceAccounts/DEMO/nightly", {"username": "robot@demo", "password": "a-new-password-42"})
    assert fire(created, "2027-01-02T03:00:00Z")["outcome"] == "started"
    assert client.get(f"{base(job)}/{created['id']}").body["lastError"] is None


def test_a_fire_delivered_again_dispatches_an_execution_its_first_delivery_left_behind(client, job):
    from chalicelib.platform.models import Execution as ExecutionItem
    from chalicelib.schedules.service import fire_execution_id

    created = client.post(base(job), schedule_body("0 3 * * *")).body
    fire_ms = int(datetime(2027, 1, 1, 3, tzinfo=timezone.utc).timestamp() * 1000)
    execution_id = fire_execution_id(created["id"], fire_ms)
    # What a trigger that died between the execution's put and its dispatch leaves behind.
    ExecutionItem(job["id"], execution_id, account_alias="DEMO", created_time=fire_ms, status="PENDING", attempt=1,
                  timers=[], target_hosts=["localhost"], failed_hosts=[], started_by=created["id"]).save()
    assert fire(created, "2027-01-01T03:00:00Z")["outcome"] == "dispatched"
    sfn = aws.client("stepfunctions")
    arn = get_settings().execution_state_machine_arn.replace(":stateMachine:", ":execution:")
    assert sfn.describe_execution(executionArn=f"{arn}:{execution_id}-1")["status"]
    assert fire(created, "2027-01-01T03:00:00Z")["outcome"] == "duplicate"
    assert len(executions_of(job)) == 1
