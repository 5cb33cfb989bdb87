"""The run handoff and the worker's two workflow tasks (Queue, Run), against moto's DynamoDB.

Step Functions is a recorder here: what matters is which task token each party ends or beats on,
with what output. The workflow itself runs in local mode's emulator (tests/e2e).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from chalicelib.executions.handoff import ENDED, STORED, SUPERSEDED, Handoff, RunHandoff
from chalicelib.platform.config import get_settings
from chalicelib.platform.models import Execution
from chalicelib.platform.wiring import execution_service, job_service
from runner_lambda.reporting import claim, finish
from runner_lambda.worker import Attempt, Dependencies, RunMessage

QUEUE_TOKEN = "queue-token"
RUN_TOKEN = "run-token"


def start(client, repo: Path) -> tuple[dict, dict]:
    body = {"repository": {"url": f"file://{repo}", "branch": "main", "defaultPlaybook": "site.yml"},
            "hosts": [{"id": "web1", "hostVars": {"ansible_connection": "local"}}]}
    job = client.post("/jobs/DEMO", body).body[0]
    answer = client.post(f"/jobs/DEMO/{job['id']}/start", {})
    assert answer.status == 201, answer.body
    return job, answer.body


class Workflow:
    """Records SendTaskSuccess and SendTaskHeartbeat; `on_claimed` runs when the Queue task is ended claimed."""

    def __init__(self, over: tuple[str, ...] = ()) -> None:
        self.successes: list[tuple[str, dict]] = []
        self.heartbeats: list[str] = []
        self.on_claimed = None
        self._over = set(over)

    def _check(self, token: str, operation: str) -> None:
        if token in self._over:
            raise ClientError({"Error": {"Code": "TaskTimedOut", "Message": "over"}}, operation)

    def send_task_success(self, taskToken: str, output: str) -> None:  # noqa: N803 - boto3's names
        self._check(taskToken, "SendTaskSuccess")
        self.successes.append((taskToken, json.loads(output)))
        if taskToken == QUEUE_TOKEN and json.loads(output)["claimed"] and self.on_claimed:
            self.on_claimed()

    def send_task_heartbeat(self, taskToken: str) -> None:  # noqa: N803
        self._check(taskToken, "SendTaskHeartbeat")
        self.heartbeats.append(taskToken)


def handoff_of(execution: dict, attempt: int = 1) -> Handoff:
    return Handoff("DEMO", execution["job_id"], execution["execution_id"], attempt, RUN_TOKEN)


def attempt_of(execution: dict, workflow: Workflow, attempt: int = 1) -> Attempt:
    message = RunMessage("DEMO", execution["job_id"], execution["execution_id"], attempt, QUEUE_TOKEN)
    return Attempt(message, Dependencies(get_settings(), job_service(), execution_service(), workflow))


def row(execution: dict) -> Execution:
    return Execution.get(execution["job_id"], execution["execution_id"], consistent_read=True)


# --- the handoff on its own ----------------------------------------------------------------------

def test_the_handoff_stores_the_token_of_an_active_attempt_and_ends_the_run_task_of_an_ended_one(client, repo):
    _, active = start(client, repo)
    claim(active["job_id"], active["execution_id"], 1, "a worker")
    _, ended = start(client, repo)
    assert finish(claim(ended["job_id"], ended["execution_id"], 1, "a worker"), "INIT_FAILURE", reason="no playbook")
    job, restarted = start(client, repo)
    path = f"/jobs/DEMO/{job['id']}/executions/{restarted['execution_id']}"
    assert client.post(f"{path}/stop", {}).status == 202 and client.post(f"{path}/restart", {}).status == 202
    workflow = Workflow()
    handoff = RunHandoff(workflow)
    # An active attempt: the token is stored for its worker, the Run task is left to it.
    assert handoff.handle(handoff_of(active)) == STORED
    assert row(active).run_token == RUN_TOKEN and workflow.successes == []
    # An ended attempt: its Run task is ended with the status recorded, nothing is stored.
    assert handoff.handle(handoff_of(ended)) == ENDED
    assert workflow.successes.pop() == (RUN_TOKEN, {"executionId": ended["execution_id"], "attempt": 1,
                                                    "status": "INIT_FAILURE"})
    assert row(ended).run_token is None
    # An attempt restarted since (so over): its Run task is ended, the new attempt is left alone.
    assert handoff.handle(handoff_of(restarted, attempt=1)) == SUPERSEDED
    assert workflow.successes.pop() == (RUN_TOKEN, {"executionId": restarted["execution_id"], "attempt": 1,
                                                    "status": None, "restartedAs": 2})
    current = row(restarted)
    assert current.status == "PENDING" and int(current.attempt) == 2 and current.run_token is None
    # A Run task already over (its heartbeat window passed): nothing left to do, nothing raised.
    assert RunHandoff(Workflow(over=(RUN_TOKEN,))).handle(handoff_of(ended)) == ENDED


# --- the worker's side ---------------------------------------------------------------------------

def test_the_worker_leaves_the_queue_then_beats_and_reports_on_the_handed_over_run_token(client, repo):
    # GIVEN a workflow that hands the Run task's token over as soon as the Queue task is ended
    _, execution = start(client, repo)
    workflow = Workflow()
    workflow.on_claimed = lambda: RunHandoff(workflow).handle(handoff_of(execution))
    # WHEN a worker runs the attempt
    assert attempt_of(execution, workflow).run() == "SUCCESS"
    # THEN it ended the Queue task once claimed, beat only on the Run task, and ended it with the result
    (queue_token, claimed), (run_token, result) = workflow.successes
    assert queue_token == QUEUE_TOKEN and claimed["claimed"] is True
    assert run_token == RUN_TOKEN and result == {"executionId": execution["execution_id"], "attempt": 1,
                                                 "status": "SUCCESS"}
    assert workflow.heartbeats and set(workflow.heartbeats) == {RUN_TOKEN}


def test_a_run_that_ends_before_its_handoff_is_reported_by_the_handoff_once(client, repo):
    _, execution = start(client, repo)
    workflow = Workflow()
    assert attempt_of(execution, workflow).run() == "SUCCESS"
    assert [token for token, _ in workflow.successes] == [QUEUE_TOKEN] and workflow.heartbeats == []
    assert RunHandoff(workflow).handle(handoff_of(execution)) == ENDED
    assert workflow.successes[1] == (RUN_TOKEN, {"executionId": execution["execution_id"], "attempt": 1,
                                                 "status": "SUCCESS"})


def test_a_message_the_worker_cannot_claim_runs_nothing_and_ends_the_queue_task(client, repo):
    # Stopped or killed while queued: the Queue task ends unclaimed, the workflow gives its slot back.
    for action, status in (("stop", "STOPPED"), ("kill", "KILLED")):
        job, execution = start(client, repo)
        assert client.post(f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}/{action}", {}).status == 202
        workflow = Workflow()
        assert attempt_of(execution, workflow).run() == "duplicate"
        assert workflow.successes == [(QUEUE_TOKEN, {"claimed": False, "status": status})]
    # Claimed by another delivery: the Queue task ends claimed. A claimer that died between its
    # claim and ending the task is then watched by the Run task's heartbeat; for one that did end
    # it, the task is over and this changes nothing.
    _, execution = start(client, repo)
    claim(execution["job_id"], execution["execution_id"], 1, "the first delivery")
    workflow = Workflow()
    assert attempt_of(execution, workflow).run() == "duplicate"
    assert [(token, output["claimed"]) for token, output in workflow.successes] == [(QUEUE_TOKEN, True)]
    assert attempt_of(execution, Workflow(over=(QUEUE_TOKEN,))).run() == "duplicate"
    assert row(execution).status == "INITIALIZING"
