"""Execution routes through the gateway, and the worker's attempt against real git and ansible."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import boto3
import pytest

from chalicelib.platform import aws
from chalicelib.platform.config import get_settings
from chalicelib.platform.models import Execution, ExecutionEvent
from chalicelib.platform.wiring import execution_service, job_service
from runner_lambda.worker import Attempt, Dependencies, RunMessage
from tests.keyfactory import b64_key

PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: greet
      debug:
        msg: "hello {{ greeting | default('world') }} from {{ inventory_hostname }}"
      tags: [greet]
    - name: fail on the chosen host
      fail:
        msg: "chosen to fail"
      when: inventory_hostname == (fail_on | default(''))
    - name: tagged elsewhere
      debug:
        msg: other
      tags: [other]
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=Ada", "-c", "user.email=ada@example.com", *args],
                          cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "master")
    (path / "site.yml").write_text(PLAYBOOK)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "first playbook")
    return path


def job_body(repo: Path, **extra) -> dict:
    body = {"repository": {"url": f"file://{repo}", "defaultPlaybook": "site.yml"},
            "hosts": [{"id": "web1", "hostVars": {"ansible_connection": "local"}},
                      {"id": "web2", "hostVars": {"ansible_connection": "local"}}]}
    body.update(extra)
    return body


def start(client, repo, body=None, start_body=None, **extra):
    job = client.post("/jobs/DEMO", body or job_body(repo, **extra)).body[0]
    answer = client.post(f"/jobs/DEMO/{job['id']}/start", start_body if start_body is not None else {})
    assert answer.status == 201, answer.body
    return job, answer.body


def run_attempt(execution: dict, attempt: int = 1) -> str:
    """What the worker does with the run message of this attempt."""
    message = RunMessage("DEMO", execution["job_id"], execution["execution_id"], attempt, f"token-{attempt}")
    deps = Dependencies(get_settings(), job_service(), execution_service(), aws.client("stepfunctions"))
    return Attempt(message, deps).run()


def events_of(client, job, execution) -> list[dict]:
    answer = client.get(f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}/events?size=1000")
    assert answer.status == 200
    return answer.body["results"]


# --- routes ------------------------------------------------------------------------------------

def test_start_answers_a_pending_execution_and_dispatches_its_workflow(client, repo):
    job, execution = start(client, repo)
    assert execution["status"] == "PENDING" and execution["job_id"] == job["id"]
    assert execution["account_alias"] == "DEMO" and execution["attempt"] == 1
    assert execution["timers"] == [] and execution["start"] is None and execution["end"] is None
    assert execution["failed_hosts"] == [] and execution["is_vpn_established"] is False
    assert execution["hosts"] == ["web1", "web2"] and execution["started_by"] == "demo-user"
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    runs = sfn.list_executions(stateMachineArn=get_settings().execution_state_machine_arn)["executions"]
    assert [run["name"] for run in runs] == [f"{execution['execution_id']}-1"]
    workflow_input = json.loads(sfn.describe_execution(executionArn=runs[0]["executionArn"])["input"])
    assert workflow_input["executionId"] == execution["execution_id"] and workflow_input["attempt"] == 1
    # No executionTtl: the default 180 minutes, more than a Lambda invocation holds.
    assert execution["compute"] == "fargate" and workflow_input["queueUrl"] == get_settings().fargate_queue_url != ""
    assert workflow_input["slotQueueUrl"] == get_settings().slot_queue_url
    assert workflow_input["handoffQueueUrl"] == get_settings().handoff_queue_url != ""
    assert workflow_input["runTimeoutSeconds"] > 180 * 60
    controls = sfn.list_executions(stateMachineArn=get_settings().control_state_machine_arn)["executions"]
    assert [run["name"].rsplit("-", 1)[0] for run in controls] == [f"{execution['execution_id']}-1-ttl"]
    ttl = json.loads(sfn.describe_execution(executionArn=controls[0]["executionArn"])["input"])
    assert ttl["action"] == "ttl" and ttl["ttlMinutes"] == 180 and ttl["deadline"].endswith("Z")


def test_start_targets_the_hosts_of_the_body(client, repo):
    _, execution = start(client, repo, start_body={"hosts": [{"id": "web2"}]})
    assert execution["hosts"] == ["web2"]


def test_start_keys_are_sealed_on_the_execution_never_answered(client, repo):
    key = b64_key("ed25519")
    job, execution = start(client, repo, start_body={"hosts": [{"id": "web1", "sshPrivateKey": key}], "sshPrivateKey": key})
    assert key not in json.dumps(execution)
    stored = Execution.get(job["id"], execution["execution_id"])
    assert key not in stored.sealed_keys and "BEGIN" not in stored.sealed_keys
    opened = execution_service().open_keys(stored)
    assert set(opened) == {"hosts[web1].sshPrivateKey", "sshPrivateKey"}


@pytest.mark.parametrize("body, field", [([], "body"), ({"hosts": "web1"}, "hosts"), ({"hosts": [{}]}, "hosts[0].id"),
                                         ({"sshPrivateKey": "nope"}, "sshPrivateKey")])
def test_start_with_a_bad_body_is_400(client, repo, body, field):
    job = client.post("/jobs/DEMO", job_body(repo)).body[0]
    answer = client.post(f"/jobs/DEMO/{job['id']}/start", body)
    assert answer.status == 400 and answer.body["field"] == field


def test_start_of_a_missing_job_is_404(client):
    assert client.post("/jobs/DEMO/00000000-0000-0000-0000-000000000000/start", {}).status == 404


def test_immediate_create_starts_an_execution(client, repo):
    answer = client.post("/jobs/DEMO?immediate=true", job_body(repo))
    assert answer.status == 201
    job = answer.body[0]
    listed = client.get(f"/jobs/DEMO/{job['id']}/executions").body
    assert listed["totalSize"] == 1 and listed["results"][0]["execution_id"] == answer.headers["X-Runner-Execution-Id"]


def test_executions_are_listed_newest_first(client, repo):
    job = client.post("/jobs/DEMO", job_body(repo)).body[0]
    ids = [client.post(f"/jobs/DEMO/{job['id']}/start", {}).body["execution_id"] for _ in range(3)]
    page = client.get(f"/jobs/DEMO/{job['id']}/executions?page=0&size=2").body
    rest = client.get(f"/jobs/DEMO/{job['id']}/executions?page=1&size=2").body
    assert page["totalSize"] == 3 and page["size"] == 2
    assert [e["execution_id"] for e in page["results"] + rest["results"]] == list(reversed(ids))


def test_restart_of_a_pending_execution_is_409(client, repo):
    job, execution = start(client, repo)
    answer = client.post(f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}/restart", {})
    assert answer.status == 409 and "PENDING" in answer.body["message"]


EXECUTION_ROUTES = [("POST", "/jobs/{a}/{j}/start"), ("GET", "/jobs/{a}/{j}/executions"),
                    ("GET", "/jobs/{a}/{j}/executions/{e}"), ("POST", "/jobs/{a}/{j}/executions/{e}/restart"),
                    ("GET", "/jobs/{a}/{j}/executions/{e}/events"), ("GET", "/jobs/{a}/{j}/executions/{e}/log")]


@pytest.mark.parametrize("method, template", EXECUTION_ROUTES)
def test_execution_routes_answer_403_for_another_account(client, repo, method, template):
    job = client.other.post("/jobs/OTHER", job_body(repo)).body[0]
    execution = client.other.post(f"/jobs/OTHER/{job['id']}/start", {}).body
    answer = client.request(method, template.format(a="OTHER", j=job["id"], e=execution["execution_id"]), {})
    assert answer.status == 403 and answer.body["code"] == "Forbidden"


@pytest.mark.parametrize("method, template", EXECUTION_ROUTES)
def test_execution_routes_answer_404_for_another_accounts_ids_under_mine(client, repo, method, template):
    job = client.other.post("/jobs/OTHER", job_body(repo)).body[0]
    execution = client.other.post(f"/jobs/OTHER/{job['id']}/start", {}).body
    answer = client.request(method, template.format(a="DEMO", j=job["id"], e=execution["execution_id"]), {})
    assert answer.status == 404


# --- the worker's attempt (real git, real ansible-runner; moto for AWS) -------------------------

def test_a_run_succeeds_and_records_the_commit_and_events(client, repo):
    job, execution = start(client, repo, properties={"greeting": "runner"})
    assert run_attempt(execution) == "SUCCESS"
    done = client.get(f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}").body
    assert done["status"] == "SUCCESS" and done["failed_hosts"] == []
    commit = done["repository_log"]["recent_commit"][0]
    assert commit["commit"] == git(repo, "rev-parse", "HEAD") and commit["author"] == "Ada"
    assert commit["author_email"] == "ada@example.com" and commit["message"] == "first playbook"
    assert done["timers"][0]["start"] <= done["timers"][0]["end"] == done["end"]
    events = events_of(client, job, execution)
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert events[0]["event"] == "playbook_on_start" and events[-1]["event"] == "playbook_on_stats"
    log = client.get(f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}/log")
    assert log.headers["Content-Type"].startswith("text/plain")
    assert "hello runner from web1" in log.raw.decode()


def test_a_duplicate_delivery_runs_nothing(client, repo):
    job, execution = start(client, repo)
    assert run_attempt(execution) == "SUCCESS"
    count = len(events_of(client, job, execution))
    assert run_attempt(execution) == "duplicate"
    assert len(events_of(client, job, execution)) == count


def test_failure_on_one_host_then_restart_runs_it_alone_at_the_same_commit(client, repo):
    job, execution = start(client, repo, properties={"fail_on": "web2"})
    assert run_attempt(execution) == "FAILURE"
    path = f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}"
    failed = client.get(path).body
    assert failed["failed_hosts"] == ["web2"]
    first_commit = failed["repository_log"]["recent_commit"][0]["commit"]
    # a new commit lands before the restart: the restart must still run the first attempt's commit
    (repo / "site.yml").write_text(PLAYBOOK.replace("chosen to fail", "changed later"))
    git(repo, "commit", "-qam", "later change")
    restarted = client.post(f"{path}/restart", {})
    assert restarted.status == 202 and restarted.body["status"] == "PENDING"
    assert restarted.body["attempt"] == 2 and restarted.body["hosts"] == ["web2"]
    assert len(restarted.body["timers"]) == 1
    assert run_attempt(restarted.body, attempt=2) == "FAILURE"
    second = client.get(path).body
    assert second["repository_log"]["recent_commit"][0]["commit"] == first_commit
    hosts_of_attempt_2 = {e["host"] for e in events_of(client, job, execution) if e["attempt"] == 2 and e["host"]}
    assert hosts_of_attempt_2 == {"web2"}
    assert len(second["timers"]) == 2


def test_tags_limit_the_tasks_run(client, repo):
    job, execution = start(client, repo, playbookTags=["other"])
    assert run_attempt(execution) == "SUCCESS"
    tasks = {e["task"] for e in events_of(client, job, execution) if e["event"] == "runner_on_ok"}
    assert tasks == {"tagged elsewhere"}


def test_a_missing_playbook_is_an_init_failure(client, repo):
    body = job_body(repo)
    body["repository"]["defaultPlaybook"] = "nope.yml"
    job, execution = start(client, repo, body=body)
    assert run_attempt(execution) == "INIT_FAILURE"
    done = client.get(f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}").body
    assert "nope.yml" in done["status_reason"] and "does not exist" in done["status_reason"]


def test_a_missing_branch_is_an_init_failure(client, repo):
    body = job_body(repo)
    body["repository"]["branch"] = "no-such-branch"
    job, execution = start(client, repo, body=body)
    assert run_attempt(execution) == "INIT_FAILURE"
    done = client.get(f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}").body
    assert "no-such-branch" in done["status_reason"]


def test_dynamic_inventory_holds_every_host_of_the_account(client, repo, tmp_path):
    client.post("/jobs/DEMO", job_body(repo, hosts=[{"id": "db1", "hostVars": {"ansible_connection": "local"}}]))
    (repo / "list.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                                   "    - debug: msg=\"{{ groups['all'] | sort | join(',') }}\"\n      run_once: true\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "list hosts")
    body = job_body(repo, useDynamicInventory=True)
    body["repository"]["defaultPlaybook"] = "list.yml"
    job, execution = start(client, repo, body=body, start_body={"hosts": [{"id": "web1"}]})
    assert run_attempt(execution) == "SUCCESS"
    log = client.get(f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}/log").raw.decode()
    assert "db1,web1,web2" in log
