"""Real answers of the app (moto behind it, real git and ansible) validate against docs/openapi.yaml."""
import hashlib
import hmac
import json

import yaml
from openapi_schema_validator import OAS31Validator

from chalicelib.platform import aws
from chalicelib.callbacks import notices as callbacks
from chalicelib.jobs import spec as jobspec
from chalicelib.platform import wiring as services
from chalicelib.executions import states
from chalicelib.auth import users
from chalicelib.callbacks import sender as webhooks
from chalicelib.platform.config import get_settings
from chalicelib.platform.models import Execution
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


# --- webhooks -------------------------------------------------------------------------------

# A loopback port nobody listens on (discard): every POST is refused, so no delivery leaves the test.
REFUSED_URL = "http://127.0.0.1:9/runner"
CALLBACK = SPEC["webhooks"]["executionCallback"]["post"]


def drain_callback_queue() -> list[dict]:
    """What the callback_sender Lambda does with every message now visible on the callback queue."""
    sqs, url = aws.client("sqs"), get_settings().callback_queue_url
    handled = []
    for _ in range(20):  # bounded: a delivery that fails comes back (delayed) to be retried
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            break
        for message in messages:
            body = json.loads(message["Body"])
            services.sender().handle(body)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            handled.append(body)
    return handled


def test_delivery_answers_and_callback_payloads_match_the_document(client, repo):
    # GIVEN an execution of a job with a DEBUG and a RESULT callback, run to SUCCESS, whose
    # events and final status are noticed as the worker notices them
    job, execution = start(client, repo, callbacks=[{"url": REFUSED_URL, "level": "DEBUG"},
                                                    {"url": f"{REFUSED_URL}/result", "level": "RESULT"}])
    assert run_attempt(execution) == states.SUCCESS
    stored = Execution.get(job["id"], execution["execution_id"])
    events = events_of(client, job, execution)[:3]
    assert len(events) == 3
    services.notifier().events(stored, states.RUNNING, [event["seq"] for event in events])
    services.notifier().status_changed(stored, states.SUCCESS)
    # WHEN the callback queue is handled (status changes become deliveries, deliveries are tried)
    sent = [message["delivery"] for message in drain_callback_queue() if "delivery" in message]
    # THEN every payload the sender would POST (rebuilt from the tables) is a CallbackPayload
    stored = Execution.get(job["id"], execution["execution_id"])
    payloads = [webhooks.Sender.payload(services.sender().rebuild(stored, delivery)) for delivery in sent]
    for payload in payloads:
        assert_documented("CallbackPayload", payload)
    assert {payload["event"]["seq"] for payload in payloads if payload["type"] == "event"} == {e["seq"] for e in events}
    assert [payload["event"] for payload in payloads if payload["type"] == "event"][:1] == events[:1]
    final = [payload for payload in payloads if payload["type"] == "status" and payload["status"] == states.SUCCESS]
    assert {payload["level"] for payload in final} == {"DEBUG", "RESULT"}
    for payload in final:
        assert_documented("CallbackResult", payload["result"])
    # AND the delivery log answers them, tried and refused
    path = f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}/deliveries"
    answer = client.get(path)
    assert answer.status == 200, answer.body
    assert_documented("DeliveryList", answer.body)
    results = answer.body["results"]
    assert {item["deliveryId"] for item in results} == {delivery["deliveryId"] for delivery in sent}
    assert [item["seq"] for item in results] == sorted(item["seq"] for item in results)
    for item in results:
        assert_documented("Delivery", item)
        assert item["state"] == "RETRYING" and item["statusCode"] is None and item["lastError"], item


def test_deliveries_of_another_accounts_execution_are_404(client, repo):
    other_job = client.other.post("/jobs/OTHER", job_body(repo)).body[0]
    other = client.other.post(f"/jobs/OTHER/{other_job['id']}/start", {}).body
    answer = client.get(f"/jobs/DEMO/{other_job['id']}/executions/{other['execution_id']}/deliveries")
    assert answer.status == 404 and answer.body["code"] == "NotFound"
    assert_valid(SPEC, "Error", answer.body)


def test_webhook_secret_answers_match_the_document(client):
    # GIVEN an account that never asked for its secret: the first GET makes one, later GETs keep it
    first = client.get("/webhookSecret/DEMO")
    assert first.status == 200, first.body
    assert_documented("WebhookSecret", first.body)
    assert first.body["accountAlias"] == "DEMO"
    assert client.get("/webhookSecret/DEMO").body == first.body
    # WHEN it is rotated
    rotated = client.post("/webhookSecret/DEMO")
    # THEN the answer is a new secret, the one GET answers from now on
    assert rotated.status == 200, rotated.body
    assert_documented("WebhookSecret", rotated.body)
    assert rotated.body["webhookSecret"] != first.body["webhookSecret"]
    assert client.get("/webhookSecret/DEMO").body == rotated.body
    for refused in (client.get("/webhookSecret/OTHER"), client.post("/webhookSecret/OTHER")):
        assert refused.status == 403 and refused.body["code"] == "Forbidden"
        assert_valid(SPEC, "Error", refused.body)


def test_the_documented_signature_is_the_one_the_sender_makes():
    secret, body = "3q2-7wXkQm9Zp1VtY0cRb8NfLhJ4sGdA6eUiKoWzTxE", b'{"seq":1}'
    signature = webhooks.sign(secret, body)
    # As documented: sha256= and the hex HMAC-SHA256 of the raw body, keyed with the secret's UTF-8 bytes.
    assert signature == "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    headers = {parameter["name"]: parameter["schema"] for parameter in CALLBACK["parameters"]}
    assert set(headers) == {"X-Runner-Delivery", "X-Runner-Signature"}
    assert OAS31Validator(headers["X-Runner-Signature"]).is_valid(signature)


def test_the_documented_levels_are_those_the_sender_applies():
    level = SPEC["components"]["schemas"]["CallbackLevel"]
    assert tuple(level["enum"]) == jobspec.CALLBACK_LEVELS == (callbacks.DEBUG, callbacks.ERROR, callbacks.RESULT)
    for text in (level["description"], CALLBACK["description"]):
        for name in callbacks.ERROR_EVENTS | callbacks.ERROR_STATUSES:
            assert name in text, f"{name} is missing from a description of the ERROR level"


def test_the_webhook_examples_match_their_schemas():
    for example in CALLBACK["requestBody"]["content"]["application/json"]["examples"].values():
        assert_documented("CallbackPayload", example["value"])
    for name in ("Delivery", "WebhookSecret"):
        assert_valid(SPEC, name, SPEC["components"]["schemas"][name]["example"])
