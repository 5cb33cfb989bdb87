"""Schedules end to end: local mode's scheduler fires real schedules that run real playbooks."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO_ROOT, assert_error
from tests.e2e.realparts import make_repo

PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: scheduled hello
      debug:
        msg: hello from a schedule
"""
# Local mode fires within 1 s of the fire time; the rest is a loaded 2-core machine's slack.
LATENESS_MS = 1000


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("schedules-repo") / "playbooks"
    make_repo(path, {"site.yml": PLAYBOOK})
    return path


def admin(instance, *args: str, stdin: str | None = None) -> str:
    """Run the admin command against a running local mode."""
    environment = json.loads((instance.state_dir / "emulator.json").read_text())["environment"]
    done = subprocess.run([sys.executable, "-m", "chalicelib.admin", *args], cwd=REPO_ROOT, input=stdin,
                          env={"PATH": "/usr/bin:/bin", **environment}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ahead(seconds: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


def epoch_ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)


@pytest.fixture
def setup(service, repo):
    """A job, and a service account with its own user, in DEMO; answers (api, job, service account alias)."""
    api = service.client("DEMO")
    username, password = f"robot-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    admin(service, "create-user", "--account", "DEMO", "--username", username, "--password-stdin",
          stdin=password + "\n")
    alias = f"sa-{uuid.uuid4().hex[:8]}"
    created = api.post("/serviceAccounts/DEMO", json={"alias": alias, "username": username, "password": password})
    assert created.status_code == 201, created.text
    job = api.post("/jobs/DEMO", json={
        "description": "scheduled", "repository": {"url": f"file://{repo}", "defaultPlaybook": "site.yml"},
        "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}]}).json()[0]
    return api, job, alias, username


def schedule(api, job, alias, kind, expression) -> dict:
    answer = api.post(f"/jobs/DEMO/{job['id']}/schedules", json={
        "description": "e2e", "serviceAccountAlias": alias, "trigger": {"type": kind, "expression": expression}})
    assert answer.status_code == 201, answer.text
    return answer.json()


def executions(api, job) -> list[dict]:
    return api.get(f"/jobs/DEMO/{job['id']}/executions").json()["results"]


def wait_for_executions(api, job, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = executions(api, job)
        if len(found) >= count:
            return found
        time.sleep(0.2)
    return executions(api, job)


def test_every_minute_runs_within_the_next_minute(setup):
    api, job, alias, _ = setup
    created = schedule(api, job, alias, "cron", "* * * * *")
    first = created["nextRuns"][0]
    assert [epoch_ms(run) for run in created["nextRuns"]] == [epoch_ms(first) + 60_000 * index for index in range(5)]
    found = wait_for_executions(api, job, 1, timeout=75)
    assert len(found) == 1, found
    execution = found[0]
    assert execution["started_by"] == created["id"]
    assert execution["scheduled_time"] == epoch_ms(first)
    assert 0 <= execution["created_time"] - execution["scheduled_time"] < LATENESS_MS, execution
    # The trigger records the fire on the schedule just after it starts the execution.
    deadline = time.monotonic() + 5
    while True:
        got = api.get(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}").json()
        if got["lastRun"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got["lastRun"] == {"fireTime": first, "executionId": execution["execution_id"]}
    assert api.delete(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}").status_code == 204


def test_a_date_ten_seconds_ahead_runs_exactly_once(setup):
    api, job, alias, _ = setup
    when = ahead(10)
    created = schedule(api, job, alias, "date", iso(when))
    assert created["nextRuns"] == [iso(when)]
    found = wait_for_executions(api, job, 1, timeout=20)
    assert len(found) == 1
    assert 0 <= found[0]["created_time"] - found[0]["scheduled_time"] < LATENESS_MS, found[0]
    time.sleep(3)
    assert len(executions(api, job)) == 1
    got = api.get(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}").json()
    assert got["status"] == "COMPLETED" and got["nextRuns"] == []


def test_an_update_moves_the_next_run(setup):
    api, job, alias, _ = setup
    created = schedule(api, job, alias, "date", iso(ahead(3600)))
    sooner = ahead(6)
    updated = api.put(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}", json={
        "description": "sooner", "serviceAccountAlias": alias, "trigger": {"type": "date", "expression": iso(sooner)}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["nextRuns"] == [iso(sooner)] != created["nextRuns"]
    found = wait_for_executions(api, job, 1, timeout=20)
    assert len(found) == 1 and found[0]["scheduled_time"] == int(sooner.timestamp() * 1000)


def test_a_deleted_schedule_runs_no_more(setup):
    api, job, alias, _ = setup
    created = schedule(api, job, alias, "date", iso(ahead(5)))
    assert api.delete(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}").status_code == 204
    time.sleep(8)
    assert executions(api, job) == []
    assert_error(api.get(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}"), 404)


def test_a_service_account_whose_password_changed_runs_nothing_and_says_why(setup, service):
    api, job, alias, username = setup
    created = schedule(api, job, alias, "date", iso(ahead(5)))
    admin(service, "create-user", "--account", "DEMO", "--username", username, "--password-stdin", "--reset",
          stdin="a-brand-new-password\n")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = api.get(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}").json()
        if got["lastError"]:
            break
        time.sleep(0.2)
    assert alias in got["lastError"] and "log in" in got["lastError"], got
    assert executions(api, job) == []


def test_schedules_survive_a_restart_of_local_mode(start_local_mode, repo):
    instance = start_local_mode(accounts="DEMO").start()
    api = instance.client("DEMO")
    entry = instance.account("DEMO")
    api.post("/serviceAccounts/DEMO", json={"alias": "demo-sa", "username": entry["username"],
                                            "password": entry["password"]})
    job = api.post("/jobs/DEMO", json={
        "repository": {"url": f"file://{repo}", "defaultPlaybook": "site.yml"},
        "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}]}).json()[0]
    when = ahead(25)
    created = schedule(api, job, "demo-sa", "date", iso(when))
    instance.stop()
    instance.start()
    api = instance.client("DEMO")
    assert api.get(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}").json()["nextRuns"] == [iso(when)]
    found = wait_for_executions(api, job, 1, timeout=max(5.0, (when - datetime.now(timezone.utc)).total_seconds() + 10))
    assert len(found) == 1 and found[0]["started_by"] == created["id"]
