"""A run waiting in the queue is not a lost worker, end to end: local mode with one worker, a short heartbeat window.

The execution workflow waits for a claim without a heartbeat (its Queue task) and watches the
claimed run with one (its Run task), so a run may wait for a busy worker longer than the window.
That a worker dying mid-run is still recorded "worker lost" within the window is
test_execution_control.py's test_a_worker_killed_mid_run_is_failure_worker_lost_and_can_restart.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import LocalMode, running_local_mode
from tests.e2e.realparts import make_repo
from tests.waiting import wait_for, wait_until

# Short, so that a run queued behind another waits longer than it; long enough for a handoff to
# reach a worker on a loaded 2-core machine.
HEARTBEAT = 8
# The run holding the only worker: well beyond the window and the time a second run needs to queue.
BLOCKER_SECONDS = 3 * HEARTBEAT
BLOCKER = """- hosts: all
  gather_facts: false
  tasks:
    - name: hold the worker
      command: "sleep {{ seconds }}"
"""
QUICK = "- hosts: all\n  gather_facts: false\n  tasks:\n    - command: 'true'\n"
FINAL = {"SUCCESS", "FAILURE", "INIT_FAILURE", "STOPPED", "KILLED"}


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    yield from running_local_mode(tmp_path_factory, "queued",
                                  env={"RUNNER_LOCAL_WORKERS": "1", "RUNNER_HEARTBEAT_SECONDS": str(HEARTBEAT)})


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("queued-repo") / "plays"
    make_repo(path, {"blocker.yml": BLOCKER, "quick.yml": QUICK})
    return path


def start(api, repo: Path, playbook: str, **job) -> str:
    body = {"repository": {"url": f"file://{repo}", "defaultPlaybook": playbook}, "hosts": [{"id": "localhost"}], **job}
    created = api.post("/jobs/DEMO", json=body).json()[0]
    answer = api.post(f"/jobs/DEMO/{created['id']}/start", json={})
    assert answer.status_code == 201, answer.text
    return f"/jobs/DEMO/{created['id']}/executions/{answer.json()['execution_id']}"


def queued_seconds(instance: LocalMode, execution_id: str) -> float:
    """How long the execution's workflow has been in its Queue task, by the emulator's history (0: not yet)."""
    history = instance.aws("stepfunctions").get_execution_history(
        executionArn=instance.workflow(execution_id)["executionArn"])["events"]
    entered = [event["timestamp"] for event in history
               if event.get("stateEnteredEventDetails", {}).get("name") == "Queue"]
    return time.time() - entered[0].timestamp() if entered else 0.0


def test_a_run_queued_longer_than_the_heartbeat_window_still_runs_and_succeeds(one_worker, repo):
    api = one_worker.client("DEMO")
    # GIVEN the only worker busy with a run longer than the heartbeat window
    blocker = start(api, repo, "blocker.yml", properties={"seconds": BLOCKER_SECONDS})
    wait_for(lambda: api.get(blocker).json(), lambda current: current["status"] == "RUNNING",
             message="the blocking run never started")
    # WHEN another run waits in the queue for longer than the heartbeat window
    queued = start(api, repo, "quick.yml")
    queued_id = queued.rsplit("/", 1)[1]
    wait_until(lambda: queued_seconds(one_worker, queued_id) > HEARTBEAT + 1,
               message="the second run never waited in the queue")
    assert api.get(queued).json()["status"] == "PENDING"
    assert "Run" not in one_worker.workflow_states(queued_id), "the second run left the queue before the window passed"
    # THEN both end SUCCESS: neither the wait in the queue nor the run itself counted as a lost worker
    for path in (blocker, queued):
        done = wait_for(lambda: api.get(path).json(), lambda current: current["status"] in FINAL,
                        message=f"{path} never ended")
        assert (done["status"], done["status_reason"]) == ("SUCCESS", None), done
    wait_until(lambda: one_worker.workflow_ended(queued_id), message="the second run's workflow never ended")
    visited = one_worker.workflow_states(queued_id)
    assert {"Queue", "Claimed", "Run", "ReleaseSlot"} <= set(visited) and "RecordWorkerLost" not in visited, visited
