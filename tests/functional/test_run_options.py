"""Run options (start, restart, schedules) and automatic retries: validation, records, the retry handler."""
from __future__ import annotations

import json

import boto3
import pytest

from chalicelib.executions.retries import NOT_RETRIED, OVER, RETRYING, STARTED, WAITING, Retries
from chalicelib.platform import aws
from chalicelib.platform.config import get_settings
from chalicelib.platform.models import Execution
from chalicelib.platform.wiring import execution_service, job_service
from tests.functional.test_executions import job_body, repo, start  # noqa: F401 - the repo fixture
from tests.functional.test_schedules import ROBOT_PASSWORD, base, fire, in_seconds, schedule_body
from chalicelib.auth import users

FOUR_HOSTS = [{"id": name, "hostVars": {"ansible_connection": "local"}} for name in ("web1", "web2", "db1", "db2")]


def path_of(execution: dict) -> str:
    return f"/jobs/DEMO/{execution['job_id']}/executions/{execution['execution_id']}"


def workflow_names(machine: str) -> list[str]:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    return [run["name"] for run in sfn.list_executions(stateMachineArn=machine)["executions"]]


def workflow_input(name: str) -> dict:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    arn = get_settings().execution_state_machine_arn.replace(":stateMachine:", ":execution:", 1)
    return json.loads(sfn.describe_execution(executionArn=f"{arn}:{name}")["input"])


def fail_attempt(execution: dict, failed: list[str], reason: str = "ansible-playbook ended failed (rc 2)") -> None:
    """What a worker records for an attempt that failed on `failed`."""
    item = Execution.get(execution["job_id"], execution["execution_id"], consistent_read=True)
    item.update(actions=[Execution.status.set("FAILURE"), Execution.failed_hosts.set(failed),
                         Execution.status_reason.set(reason)])


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Queue:
    """The retry queue's sends, kept (a delayed message is invisible to a receive until its delay is over)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send_message(self, **kwargs) -> dict:
        assert kwargs["QueueUrl"] == get_settings().retry_queue_url
        self.sent.append(kwargs)
        return aws.client("sqs").send_message(**kwargs)

    def bodies(self) -> list[dict]:
        return [json.loads(sent["MessageBody"]) for sent in self.sent]


def retries(clock=None, queue=None) -> Retries:
    kwargs = {"clock": clock} if clock else {}
    return Retries(execution_service(), job_service(), queue or aws.client("sqs"), get_settings().retry_queue_url,
                   **kwargs)


def ended(execution: dict, attempt: int = 1) -> dict:
    return {"attemptEnded": {"accountAlias": "DEMO", "jobId": execution["job_id"],
                             "executionId": execution["execution_id"], "attempt": attempt}}


# --- options at start ---------------------------------------------------------------------------

def test_start_records_the_options_it_was_given_and_answers_them_in_get_and_list(client, repo):
    options = {"limit": "web*:!web2", "checkMode": True, "diffMode": False, "verbosity": 3, "tags": " a, b,a ",
               "skipTags": ["c"], "extraVars": {"release": "1.2", "nested": {"x": [1]}}}
    job, execution = start(client, repo, body=job_body(repo, hosts=FOUR_HOSTS), start_body=options)
    expected = {"limit": "web*:!web2", "checkMode": True, "diffMode": False, "verbosity": 3, "tags": "a,b",
                "skipTags": "c", "extraVars": {"release": "1.2", "nested": {"x": [1]}}}
    assert execution["options"] == expected and execution["hosts"] == ["web1"]
    assert client.get(path_of(execution)).body["options"] == expected
    assert client.get(f"/jobs/DEMO/{job['id']}/executions").body["results"][0]["options"] == expected


def test_an_execution_without_options_answers_an_empty_object_and_no_retry(client, repo):
    _, execution = start(client, repo)
    assert execution["options"] == {} and execution["retry"] is None


def test_a_limit_is_matched_against_the_hosts_of_the_body(client, repo):
    _, execution = start(client, repo, body=job_body(repo, hosts=FOUR_HOSTS),
                         start_body={"hosts": ["db1", "db2", "web1"], "limit": "db*:&*2"})
    assert execution["hosts"] == ["db2"]


@pytest.mark.parametrize("body, field", [
    ({"limit": "nothing*"}, "limit"), ({"limit": "web1:&db1"}, "limit"), ({"limit": ""}, "limit"),
    ({"limit": "@hosts.txt"}, "limit"), ({"limit": "localhost"}, "limit"), ({"limit": "~web("}, "limit"),
    ({"verbosity": 7}, "verbosity"), ({"verbosity": -1}, "verbosity"), ({"verbosity": True}, "verbosity"),
    ({"verbosity": "2"}, "verbosity"), ({"checkMode": "yes"}, "checkMode"), ({"diffMode": 1}, "diffMode"),
    ({"tags": "deploy,-x"}, "tags"), ({"tags": 3}, "tags"), ({"skipTags": "-all"}, "skipTags"),
    ({"tags": "a b"}, "tags"), ({"extraVars": []}, "extraVars"), ({"extraVars": "a=1"}, "extraVars"),
    ({"extraVars": {"ansible_password": "hunter2"}}, "extraVars.ansible_password"),
    ({"extraVars": {"Ansible_Become_Pass": "hunter2"}}, "extraVars.Ansible_Become_Pass"),
    ({"extraVars": {"big": "x" * 40000}}, "extraVars"),
])
def test_a_bad_option_is_a_400_naming_the_field_and_starts_nothing(client, repo, body, field):
    job = client.post("/jobs/DEMO", job_body(repo)).body[0]
    answer = client.post(f"/jobs/DEMO/{job['id']}/start", body)
    assert answer.status == 400, answer.body
    assert answer.body["code"] == "InvalidRequest" and answer.body["field"] == field, answer.body
    assert "hunter2" not in json.dumps(answer.body)
    assert client.get(f"/jobs/DEMO/{job['id']}/executions").body["totalSize"] == 0


def test_restart_replaces_the_options_it_sends_keeps_the_others_and_limits_its_hosts(client, repo):
    _, execution = start(client, repo, body=job_body(repo, hosts=FOUR_HOSTS),
                         start_body={"checkMode": True, "verbosity": 1})
    fail_attempt(execution, ["web1", "web2", "db1"])
    answer = client.post(path_of(execution) + "/restart", {"verbosity": 4, "limit": "web*"})
    assert answer.status == 202, answer.body
    assert answer.body["options"] == {"checkMode": True, "verbosity": 4, "limit": "web*"}
    assert answer.body["hosts"] == ["web1", "web2"] and answer.body["attempt"] == 2


def test_restart_with_a_limit_matching_none_of_its_hosts_is_400(client, repo):
    _, execution = start(client, repo)
    fail_attempt(execution, ["web1"])
    answer = client.post(path_of(execution) + "/restart", {"limit": "web2"})
    assert answer.status == 400 and answer.body["field"] == "limit"
    assert client.get(path_of(execution)).body["status"] == "FAILURE"


# --- the job's retry policy ---------------------------------------------------------------------

@pytest.mark.parametrize("retry, field", [
    ({"attempts": 0}, "retry.attempts"), ({"attempts": 6}, "retry.attempts"), ({}, "retry.attempts"),
    ({"attempts": 2, "delaySeconds": 3601}, "retry.delaySeconds"), ({"attempts": 2, "delaySeconds": -1}, "retry.delaySeconds"),
    ({"attempts": 2, "onlyFailedHosts": "yes"}, "retry.onlyFailedHosts"), ([], "retry"), (2, "retry"),
])
def test_a_bad_retry_policy_is_a_400_naming_the_field(client, repo, retry, field):
    answer = client.post("/jobs/DEMO", job_body(repo, retry=retry))
    assert answer.status == 400 and answer.body["field"] == field, answer.body


def test_a_job_answers_its_retry_policy_with_defaults_and_an_execution_copies_it(client, repo):
    job, execution = start(client, repo, retry={"attempts": 2})
    assert job["retry"] == {"attempts": 2, "delaySeconds": 0, "onlyFailedHosts": True}
    assert execution["retry"] == {"attempts": 2, "delaySeconds": 0, "onlyFailedHosts": True, "retries": 0,
                                  "nextRetryTime": None}
    assert workflow_input(f"{execution['execution_id']}-1")["retrying"] is True
    assert client.post("/jobs/DEMO", job_body(repo)).body[0]["retry"] is None


# --- the retry handler --------------------------------------------------------------------------

def test_a_failed_attempt_is_retried_at_once_on_its_failed_hosts_as_a_restart_would(client, repo):
    job, execution = start(client, repo, retry={"attempts": 2})
    fail_attempt(execution, ["web2"])
    assert retries().handle(ended(execution)) == RETRYING
    after = client.get(path_of(execution)).body
    assert after["status"] == "PENDING" and after["attempt"] == 2 and after["hosts"] == ["web2"]
    assert after["failed_hosts"] == [] and after["retry"]["retries"] == 1
    assert after["status_reason"].startswith("retry 1 of 2: attempt 1 ended FAILURE (ansible-playbook ended")
    executions = get_settings().execution_state_machine_arn
    assert sorted(workflow_names(executions)) == sorted([f"{execution['execution_id']}-1", f"{execution['execution_id']}-2"])
    assert workflow_input(f"{execution['execution_id']}-2")["retrying"] is True
    assert [name.rsplit("-", 1)[0] for name in workflow_names(get_settings().control_state_machine_arn)].count(
        f"{execution['execution_id']}-2-ttl") == 1
    # The same message again (a duplicate delivery) begins nothing more.
    assert retries().handle(ended(execution)) == STARTED
    assert len(workflow_names(executions)) == 2
    assert client.get(path_of(execution)).body["retry"]["retries"] == 1


def test_the_last_allowed_retry_dispatches_a_workflow_that_will_not_ask_again(client, repo):
    _, execution = start(client, repo, retry={"attempts": 1, "onlyFailedHosts": False})
    fail_attempt(execution, ["web2"])
    assert retries().handle(ended(execution)) == RETRYING
    assert client.get(path_of(execution)).body["hosts"] == ["web1", "web2"]
    assert workflow_input(f"{execution['execution_id']}-2")["retrying"] is False
    fail_attempt(execution, ["web2"])
    assert retries().handle(ended(execution, 2)) == NOT_RETRIED
    assert client.get(path_of(execution)).body["status"] == "FAILURE"


@pytest.mark.parametrize("status", ["SUCCESS", "STOPPED", "KILLED", "INIT_FAILURE"])
def test_only_a_failure_is_retried(client, repo, status):
    _, execution = start(client, repo, retry={"attempts": 3})
    Execution.get(execution["job_id"], execution["execution_id"]).update(actions=[Execution.status.set(status)])
    assert retries().handle(ended(execution)) == NOT_RETRIED
    assert client.get(path_of(execution)).body["attempt"] == 1


def test_a_worker_lost_failure_retries_every_host_of_the_attempt(client, repo):
    _, execution = start(client, repo, retry={"attempts": 1})
    fail_attempt(execution, [], reason="worker lost")
    assert retries().handle(ended(execution)) == RETRYING
    after = client.get(path_of(execution)).body
    assert after["hosts"] == ["web1", "web2"] and "(worker lost)" in after["status_reason"]


def test_a_delayed_retry_waits_pending_and_a_stop_meanwhile_ends_the_retrying(client, repo):
    # GIVEN a failed attempt of a job that retries after 2000 s (longer than one SQS delay)
    clock, queue = Clock(1_700_000_000_000), Queue()
    _, execution = start(client, repo, retry={"attempts": 2, "delaySeconds": 2000})
    fail_attempt(execution, ["web1"])
    # WHEN the workflow says the attempt is over
    assert retries(clock, queue).handle(ended(execution)) == RETRYING
    # THEN the execution waits PENDING, saying which retry and when, with no workflow for it yet
    waiting = client.get(path_of(execution)).body
    assert waiting["status"] == "PENDING" and waiting["attempt"] == 2
    assert waiting["status_reason"].startswith("retry 1 of 2 in 2000 s (at ")
    assert waiting["retry"]["nextRetryTime"] == clock.now + 2_000_000
    assert f"{execution['execution_id']}-2" not in workflow_names(get_settings().execution_state_machine_arn)
    due = queue.bodies()
    assert due == [{"retryDue": {"jobId": execution["job_id"], "executionId": execution["execution_id"], "attempt": 2}}]
    assert queue.sent[0]["DelaySeconds"] == 900
    # ... a due message before the time sends itself again, for what remains
    clock.now += 1_900_000
    assert retries(clock, queue).handle(due[0]) == WAITING
    assert queue.sent[1]["DelaySeconds"] == 100 and queue.bodies()[1] == due[0]
    # WHEN a user stops it while it waits
    stopped = client.post(path_of(execution) + "/stop", {})
    assert stopped.status == 202 and stopped.body["status"] == "STOPPED"
    # THEN the due message finds it ended, and no attempt starts
    clock.now += 2_000_000
    assert retries(clock).handle(due[0]) == OVER
    assert f"{execution['execution_id']}-2" not in workflow_names(get_settings().execution_state_machine_arn)
    assert client.get(path_of(execution)).body["status"] == "STOPPED"


def test_a_due_retry_starts_its_workflow_once(client, repo):
    clock, queue = Clock(1_700_000_000_000), Queue()
    _, execution = start(client, repo, retry={"attempts": 1, "delaySeconds": 30})
    fail_attempt(execution, ["web1"])
    assert retries(clock, queue).handle(ended(execution)) == RETRYING
    assert queue.sent[0]["DelaySeconds"] == 30
    due = queue.bodies()[0]
    clock.now += 30_000
    assert retries(clock).handle(due) == STARTED
    assert retries(clock).handle(due) == STARTED  # a duplicate: the workflow's name keeps it one
    names = workflow_names(get_settings().execution_state_machine_arn)
    assert names.count(f"{execution['execution_id']}-2") == 1


def test_a_malformed_retry_message_is_ignored(client):
    assert retries().handle({"attemptEnded": {"jobId": "j"}}) == OVER
    assert retries().handle({"something": 1}) == OVER


# --- schedules ----------------------------------------------------------------------------------

@pytest.fixture
def scheduled_job(client, repo):
    users.create_user("robot@demo", ROBOT_PASSWORD, "DEMO")
    made = client.post("/jobs/DEMO", job_body(repo, hosts=FOUR_HOSTS)).body[0]
    assert client.post("/serviceAccounts/DEMO", {"alias": "nightly", "username": "robot@demo",
                                                 "password": ROBOT_PASSWORD}).status == 201
    return made


def test_a_schedule_keeps_its_options_and_each_fire_runs_with_them(client, scheduled_job):
    options = {"limit": "db*", "checkMode": True, "extraVars": {"window": "night"}}
    created = client.post(base(scheduled_job), {**schedule_body("date", kind="date"),
                                                "trigger": {"type": "date", "expression": in_seconds(3600)},
                                                "options": options})
    assert created.status == 201, created.body
    assert created.body["options"] == options
    outcome = fire(created.body, created.body["nextRuns"][0])
    assert outcome["outcome"] == "started", outcome
    execution = client.get(f"/jobs/DEMO/{scheduled_job['id']}/executions/{outcome['executionId']}").body
    assert execution["options"] == options and execution["hosts"] == ["db1", "db2"]
    updated = client.put(f"{base(scheduled_job)}/{created.body['id']}",
                         {**schedule_body(), "options": {"verbosity": 2}})
    assert updated.status == 200 and updated.body["options"] == {"verbosity": 2}
    cleared = client.put(f"{base(scheduled_job)}/{created.body['id']}", schedule_body())
    assert cleared.body["options"] == {}


@pytest.mark.parametrize("options, field", [({"limit": "nothing"}, "options.limit"), ({"verbosity": 9}, "options.verbosity"),
                                            ({"checkmode": True}, "options.checkmode"), ([], "options"),
                                            ({"extraVars": {"ansible_ssh_pass": "x"}}, "options.extraVars.ansible_ssh_pass")])
def test_a_schedule_with_bad_options_is_a_400_naming_the_field(client, scheduled_job, options, field):
    answer = client.post(base(scheduled_job), {**schedule_body(), "options": options})
    assert answer.status == 400 and answer.body["field"] == field, answer.body
