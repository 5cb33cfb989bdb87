"""Schedules end to end: local mode's scheduler fires real schedules that run real playbooks.

How late a fire is is a benchmark figure (bench/schedule_lateness.py); here a fire runs at or after
its time, exactly once, and what must not run is shown not to by a signal that closes the window.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO_ROOT, assert_error
from tests.e2e.realparts import make_repo
from tests.waiting import wait_for

PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: scheduled hello
      debug:
        msg: hello from a schedule
"""
# How long a test waits for a fire, beyond its fire time: a deadline for a loaded 2-core machine.
FIRE_DEADLINE = 90.0


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


def wait_for_executions(api, job, count: int, timeout: float = FIRE_DEADLINE) -> list[dict]:
    """The job's executions, once there are at least `count`."""
    return wait_for(lambda: executions(api, job), lambda found: len(found) >= count, timeout,
                    f"the job never had {count} execution(s)")


def get_schedule(api, job, created: dict) -> dict:
    return api.get(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}").json()


def wait_for_schedule(api, job, created: dict, accept, message: str) -> dict:
    """The schedule, once `accept(schedule)` holds."""
    return wait_for(lambda: get_schedule(api, job, created), accept, message=message)


def test_every_minute_runs_within_the_next_minute(setup):
    api, job, alias, _ = setup
    created = schedule(api, job, alias, "cron", "* * * * *")
    first = created["nextRuns"][0]
    assert [epoch_ms(run) for run in created["nextRuns"]] == [epoch_ms(first) + 60_000 * index for index in range(5)]
    found = wait_for_executions(api, job, 1, timeout=60 + FIRE_DEADLINE)
    assert len(found) == 1, found
    execution = found[0]
    assert execution["started_by"] == created["id"]
    assert execution["scheduled_time"] == epoch_ms(first)
    assert execution["created_time"] >= execution["scheduled_time"], execution  # not before its time
    # The trigger records the fire on the schedule just after it starts the execution.
    got = wait_for_schedule(api, job, created, lambda current: current["lastRun"] is not None,
                            "the schedule never recorded its fire")
    assert got["lastRun"] == {"fireTime": first, "executionId": execution["execution_id"]}
    assert api.delete(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}").status_code == 204


def test_a_date_ten_seconds_ahead_runs_exactly_once_at_or_after_its_time(setup):
    api, job, alias, _ = setup
    when = ahead(10)
    created = schedule(api, job, alias, "date", iso(when))
    assert created["nextRuns"] == [iso(when)]
    found = wait_for_executions(api, job, 1, timeout=10 + FIRE_DEADLINE)
    assert len(found) == 1
    assert found[0]["started_by"] == created["id"]
    assert found[0]["scheduled_time"] == int(when.timestamp() * 1000)
    assert found[0]["created_time"] >= found[0]["scheduled_time"], found[0]
    # A COMPLETED schedule starts nothing more (a later delivery of the fire finds it so, and would
    # reuse the fire's execution id anyway): once it shows COMPLETED, the count is final.
    got = wait_for_schedule(api, job, created, lambda current: current["status"] == "COMPLETED",
                            "the schedule never completed")
    assert got["nextRuns"] == []
    assert got["lastRun"] == {"fireTime": iso(when), "executionId": found[0]["execution_id"]}
    # The same one execution (its status moves on as it runs, so compare which, not how it stands).
    assert [e["execution_id"] for e in executions(api, job)] == [e["execution_id"] for e in found]


def test_an_update_moves_the_next_run(setup):
    api, job, alias, _ = setup
    created = schedule(api, job, alias, "date", iso(ahead(3600)))
    sooner = ahead(6)
    updated = api.put(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}", json={
        "description": "sooner", "serviceAccountAlias": alias, "trigger": {"type": "date", "expression": iso(sooner)}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["nextRuns"] == [iso(sooner)] != created["nextRuns"]
    found = wait_for_executions(api, job, 1, timeout=6 + FIRE_DEADLINE)
    assert len(found) == 1 and found[0]["scheduled_time"] == int(sooner.timestamp() * 1000)


def test_a_deleted_schedule_runs_no_more(setup):
    # GIVEN a schedule due in 10 s (room to delete it first on a busy machine), deleted at once, and a
    # witness schedule of the same job due 3 s later
    api, job, alias, _ = setup
    when = ahead(10)
    created = schedule(api, job, alias, "date", iso(when))
    witness = schedule(api, job, alias, "date", iso(when + timedelta(seconds=3)))
    assert api.delete(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}").status_code == 204
    # WHEN the witness has fired: the scheduler fires in time order, so the deleted one's time has passed
    wait_for_executions(api, job, 1, timeout=13 + FIRE_DEADLINE)
    # THEN the job's only execution is the witness's, and the deleted schedule is gone
    found = executions(api, job)
    assert [execution["started_by"] for execution in found] == [witness["id"]], found
    assert_error(api.get(f"/jobs/DEMO/{job['id']}/schedules/{created['id']}"), 404)


def test_a_service_account_whose_password_changed_runs_nothing_and_says_why(setup, service):
    # GIVEN the password of the service account's user changed (before the schedule is made, so that
    # the change, a subprocess, cannot come after the fire on a busy machine), and a schedule due soon
    api, job, alias, username = setup
    admin(service, "create-user", "--account", "DEMO", "--username", username, "--password-stdin", "--reset",
          stdin="a-brand-new-password\n")
    created = schedule(api, job, alias, "date", iso(ahead(5)))
    # The trigger records the error instead of starting anything: the fire is over once it shows.
    got = wait_for_schedule(api, job, created, lambda current: bool(current["lastError"]),
                            "the schedule never recorded an error")
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
    # GIVEN a schedule firing every minute: whatever a restart takes, its next fire comes after it
    # (a date a fixed time ahead would pass while a slow restart is still under way)
    created = schedule(api, job, "demo-sa", "cron", "* * * * *")
    # WHEN local mode is stopped and started again
    instance.stop()
    stopped_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    instance.start()
    api = instance.client("DEMO")
    # THEN the schedule is still there, and the restarted local mode fires it
    got = get_schedule(api, job, created)
    assert (got["status"], got["trigger"]) == ("ACTIVE", created["trigger"]), got
    assert [epoch_ms(run) for run in got["nextRuns"]] == [epoch_ms(got["nextRuns"][0]) + 60_000 * index
                                                          for index in range(5)]
    after_stop = wait_for(lambda: [execution for execution in executions(api, job)
                                   if execution["scheduled_time"] > stopped_ms],
                          bool, 60 + FIRE_DEADLINE, "the restarted local mode fired nothing")
    assert {execution["started_by"] for execution in after_stop} == {created["id"]}, after_stop
