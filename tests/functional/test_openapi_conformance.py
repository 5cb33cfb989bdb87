"""Real answers of the app (moto behind it, real git and ansible) validate against docs/openapi.yaml."""
import yaml

from chalicelib import users
from tests.functional.test_executions import events_of, job_body, repo, run_attempt, start  # noqa: F401
from tests.functional.test_schedules import ROBOT_PASSWORD, base, fire, in_seconds, job, schedule_body  # noqa: F401
from tests.unit.test_openapi import SPEC_PATH, assert_valid

SPEC = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
SERVICE_ACCOUNTS = "/serviceAccounts/DEMO"


def assert_documented(name: str, instance: dict) -> None:
    """Valid against components/schemas/<name>, and without a member the schema does not name."""
    assert_valid(SPEC, name, instance)
    undocumented = set(instance) - set(SPEC["components"]["schemas"][name]["properties"])
    assert not undocumented, f"{name} answers members docs/openapi.yaml does not document: {sorted(undocumented)}"


def sent(name: str, body: dict) -> dict:
    """A request body, checked to be one the document allows (the service is about to accept it)."""
    assert_valid(SPEC, name, body)
    return body


def test_job_answers_match_the_document(client, repo):
    created = client.post("/jobs/DEMO", job_body(repo, callbacks=[{"url": "https://hooks.example.com/x"}]))
    assert_valid(SPEC, "Job", created.body[0])
    assert_valid(SPEC, "JobPage", client.get("/jobs/DEMO").body)
    assert_valid(SPEC, "Error", client.get("/jobs/DEMO?page=-1").body)


def test_execution_answers_match_the_document(client, repo):
    job, execution = start(client, repo)
    assert_valid(SPEC, "Execution", execution)
    run_attempt(execution)
    path = f"/jobs/DEMO/{job['id']}/executions"
    assert_valid(SPEC, "Execution", client.get(f"{path}/{execution['execution_id']}").body)
    assert_valid(SPEC, "ExecutionPage", client.get(path).body)
    assert_valid(SPEC, "ExecutionEventPage", client.get(f"{path}/{execution['execution_id']}/events").body)


def test_schedule_answers_match_the_document(client, job):
    # GIVEN a cron schedule, and a date schedule in the reference's form (trigger under `type`)
    cron = client.post(base(job), sent("ScheduleInput", schedule_body("30 2 * * MON-FRI", timezone="Europe/Paris")))
    when = in_seconds(3600)
    date = client.post(base(job), sent("ScheduleInput", {"serviceAccountAlias": "nightly",
                                                         "type": {"type": "date", "expression": when}}))
    assert (cron.status, date.status) == (201, 201), (cron.body, date.body)
    assert len(cron.body["nextRuns"]) == 5 and date.body["nextRuns"] == [when]
    for created in (cron.body, date.body):
        assert_documented("Schedule", created)
        assert_documented("Trigger", created["trigger"])
    # WHEN they are listed, read (by id and by scheduleId) and updated
    listed = client.get(base(job)).body
    assert listed["totalSize"] == 2
    assert_valid(SPEC, "SchedulePage", listed)
    for name in ("id", "scheduleId"):
        got = client.get(f"{base(job)}/{cron.body[name]}")
        assert got.status == 200 and got.body["id"] == cron.body["id"]
        assert_documented("Schedule", got.body)
    updated = client.put(f"{base(job)}/{cron.body['id']}", sent("ScheduleInput", schedule_body("@hourly")))
    assert updated.status == 200, updated.body
    assert_documented("Schedule", updated.body)
    # THEN a fired date schedule (lastRun, COMPLETED) and a failed fire (lastError) match too
    assert fire(date.body, when)["outcome"] == "started"
    completed = client.get(f"{base(job)}/{date.body['id']}").body
    assert completed["status"] == "COMPLETED" and completed["nextRuns"] == [] and completed["lastRun"]["executionId"]
    assert_documented("Schedule", completed)
    users.create_user("robot@demo", "a-new-password-42", "DEMO", replace=True)
    assert fire(updated.body, "2027-01-01T03:00:00Z")["outcome"] == "unauthenticated"
    failed = client.get(f"{base(job)}/{cron.body['id']}").body
    assert failed["lastError"] and failed["lastErrorTime"] and failed["lastRun"]["executionId"] is None
    assert_documented("Schedule", failed)
    missing = client.get(f"{base(job)}/00000000-0000-0000-0000-000000000000")
    assert missing.status == 404
    assert_valid(SPEC, "Error", missing.body)


def test_a_scheduled_execution_matches_the_document(client, job):
    created = client.post(base(job), schedule_body("0 3 * * *")).body
    started = fire(created, "2027-01-01T03:00:00Z")
    assert started["outcome"] == "started"
    path = f"/jobs/DEMO/{job['id']}/executions"
    execution = client.get(f"{path}/{started['executionId']}").body
    assert execution["scheduled_time"] == 1798772400000 and execution["started_by"] == created["id"]
    assert_documented("Execution", execution)
    assert_valid(SPEC, "ExecutionPage", client.get(path).body)


def test_service_account_answers_match_the_document(client):
    users.create_user("robot@demo", ROBOT_PASSWORD, "DEMO")
    body = sent("ServiceAccountInput", {"alias": "nightly", "username": "robot@demo", "password": ROBOT_PASSWORD})
    created = client.post(SERVICE_ACCOUNTS, body)
    assert created.status == 201, created.body
    assert_documented("ServiceAccount", created.body)
    listed = client.get(SERVICE_ACCOUNTS).body
    assert listed == {"accounts": ["nightly"]}
    assert_documented("ServiceAccountList", listed)
    assert_documented("ServiceAccount", client.get(f"{SERVICE_ACCOUNTS}/nightly").body)
    kept = client.put(f"{SERVICE_ACCOUNTS}/nightly",
                      sent("ServiceAccountUpdate", {"username": "robot@demo", "password": "********"}))
    assert kept.status == 200, kept.body
    assert_documented("ServiceAccount", kept.body)
    duplicate = client.post(SERVICE_ACCOUNTS, body)
    wrong = client.post(SERVICE_ACCOUNTS, {**body, "alias": "other", "password": "not-the-password"})
    assert (duplicate.status, wrong.status, wrong.body.get("field")) == (409, 400, "password")
    for refused in (duplicate, wrong):
        assert_valid(SPEC, "Error", refused.body)
