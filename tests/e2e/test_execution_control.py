"""Stop, kill, time-to-live, lost workers, concurrency and races, end to end with real ansible.

Local mode runs with short windows (a TTL minute of 1 s, a 3 s heartbeat window) so that what
takes minutes on AWS takes seconds here; the code paths are the same.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import LocalMode, assert_error
from tests.e2e.realparts import Receiver, make_repo

FINAL = {"SUCCESS", "FAILURE", "INIT_FAILURE", "STOPPED", "KILLED"}
SLEEPS = """- hosts: all
  gather_facts: false
  tasks:
    - name: first sleep
      command: sleep 2
    - name: second sleep
      command: sleep 2
    - name: third sleep
      command: sleep 2
"""
LONG = """- hosts: all
  gather_facts: false
  tasks:
    - name: long sleep
      shell: "sleep {{ seconds | default(60) }} & sleep {{ seconds | default(60) }}"
"""
QUICK = "- hosts: all\n  gather_facts: false\n  tasks:\n    - command: sleep 1\n"
# Short enough to see a lost worker quickly, long enough for heartbeats on a busy 2-core machine.
HEARTBEAT = 10
CONTROL_ENV = {"RUNNER_TTL_MINUTE_SECONDS": "1", "RUNNER_TTL_GRACE_SECONDS": "6", "RUNNER_KILL_WINDOW_SECONDS": "3",
               "RUNNER_HEARTBEAT_SECONDS": str(HEARTBEAT), "RUNNER_LOCAL_WORKERS": "6", "RUNNER_MAX_CONCURRENT_PER_ACCOUNT": "4"}


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    base = tmp_path_factory.mktemp("control")
    instance = LocalMode(base / "state", base / "logs", accounts="DEMO", env=CONTROL_ENV)
    try:
        instance.start()
        yield instance
    finally:
        instance.kill()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("control-repo") / "plays"
    make_repo(path, {"sleeps.yml": SLEEPS, "long.yml": LONG, "quick.yml": QUICK})
    return path


class Run:
    """One execution, driven and observed over HTTP."""

    def __init__(self, api, repo: Path, playbook: str, **job) -> None:
        self.api = api
        body = {"repository": {"url": f"file://{repo}", "defaultPlaybook": playbook},
                "hosts": [{"id": "localhost"}], **job}
        self.job = api.post("/jobs/DEMO", json=body).json()[0]
        answer = api.post(f"/jobs/DEMO/{self.job['id']}/start", json={})
        assert answer.status_code == 201, answer.text
        self.id = answer.json()["execution_id"]
        self.path = f"/jobs/DEMO/{self.job['id']}/executions/{self.id}"

    def get(self) -> dict:
        return self.api.get(self.path).json()

    def events(self) -> list[dict]:
        return self.api.get(f"{self.path}/events", params={"size": 1000}).json()["results"]

    def wait(self, predicate, timeout: float = 60) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            current = self.get()
            if predicate(current):
                return current
            time.sleep(0.05)
        raise AssertionError(f"timed out; last seen {current['status']} ({current['status_reason']})")

    def wait_final(self, timeout: float = 60) -> dict:
        return self.wait(lambda current: current["status"] in FINAL, timeout)

    def wait_task_started(self, task: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(e["event"] == "runner_on_start" and e["task"] == task for e in self.events()):
                return
            time.sleep(0.05)
        raise AssertionError(f"task {task!r} never started")

    def post(self, action: str, body: dict | None = None):
        return self.api.post(f"{self.path}/{action}", json=body if body is not None else {})

    def processes(self) -> list[psutil.Process]:
        marker = f"{self.id}-{self.get()['attempt']}"
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get("RUNNER_RUN_ID") == marker:
                    found.append(process)
            except psutil.Error:
                pass
        return found


def test_stop_lets_the_running_task_finish_and_starts_no_other(control, repo):
    run = Run(control.client("DEMO"), repo, "sleeps.yml")
    run.wait_task_started("first sleep")
    asked = time.time()
    answer = run.post("stop", {"expiryDuration": 0})
    assert answer.status_code == 202 and answer.json()["status"] == "STOPPING"
    done = run.wait_final()
    took = time.time() - asked
    assert done["status"] == "STOPPED" and "stopped by" in done["status_reason"]
    tasks_started = [e["task"] for e in run.events() if e["event"] == "playbook_on_task_start"]
    results = [(e["event"], e["task"]) for e in run.events() if e["event"].startswith("runner_on_") and e["event"] != "runner_on_start"]
    assert tasks_started == ["first sleep"] and results == [("runner_on_ok", "first sleep")]
    assert took < 6, f"stop took {took:.2f} s for a task of 2 s"
    print(f"\nSTOP_TO_STOPPED_SECONDS={took:.2f}")


def test_kill_ends_the_run_and_every_process_of_it_within_5_s(control, repo):
    run = Run(control.client("DEMO"), repo, "long.yml")
    run.wait_task_started("long sleep")
    time.sleep(0.5)
    assert run.processes(), "the run's processes should be visible before the kill"
    asked = time.time()
    answer = run.post("kill")
    assert answer.status_code == 202 and answer.json()["status"] == "KILLING"
    done = run.wait_final(timeout=10)
    took = time.time() - asked
    assert done["status"] == "KILLED" and "killed by" in done["status_reason"]
    assert took < 5, f"kill took {took:.2f} s"
    time.sleep(0.3)
    assert run.processes() == []
    print(f"\nKILL_TO_KILLED_SECONDS={took:.2f}")


def test_stop_or_kill_of_a_pending_execution_ends_it_without_running(control, repo):
    api = control.client("DEMO")
    # Fill every run slot of the account so that the next execution stays PENDING.
    blockers = [Run(api, repo, "long.yml", properties={"seconds": 20}) for _ in range(4)]
    for blocker in blockers:
        blocker.wait(lambda current: current["status"] == "RUNNING")
    waiting_stop = Run(api, repo, "quick.yml")
    waiting_kill = Run(api, repo, "quick.yml")
    time.sleep(1.5)
    assert waiting_stop.get()["status"] == "PENDING"
    assert waiting_stop.post("stop").json()["status"] == "STOPPED"
    assert waiting_kill.post("kill").json()["status"] == "KILLED"
    for blocker in blockers:
        blocker.post("kill")
    for blocker in blockers:
        blocker.wait_final(timeout=15)
    time.sleep(2)
    for ended in (waiting_stop, waiting_kill):
        assert ended.events() == [] and ended.get()["timers"] == []
    assert waiting_stop.get()["status"] == "STOPPED" and waiting_kill.get()["status"] == "KILLED"


def test_stop_with_expiry_escalates_to_a_kill(control, repo):
    run = Run(control.client("DEMO"), repo, "long.yml")
    run.wait_task_started("long sleep")
    run.post("stop", {"expiryDuration": 1})
    done = run.wait_final(timeout=20)
    assert done["status"] == "KILLED" and "not stopped within 1 s" in done["status_reason"]
    assert run.processes() == []


@pytest.fixture(scope="module")
def receiver():
    made = Receiver()
    yield made
    made.server.shutdown()


def status_notices(receiver, path: str, last: str) -> list[str]:
    bodies = receiver.wait_for(path, lambda found: any(body["status"] == last for body in found), timeout=30)
    return [body["status"] for body in bodies if body["type"] == "status"]


def test_ttl_reached_stops_then_kills_after_the_grace(control, repo, receiver):
    run = Run(control.client("DEMO"), repo, "long.yml", executionTtl=8,
              callbacks=[{"url": f"{receiver.url}/ttl", "level": "DEBUG"}])
    run.wait_task_started("long sleep", timeout=8)  # before the deadline, even on a busy machine
    stopping = run.wait(lambda current: current["status"] in {"STOPPING", *FINAL}, timeout=20)
    assert stopping["status"] == "STOPPING" and "time-to-live of 8 min reached" in stopping["status_reason"], (stopping["status_reason"], run.events()[-3:])
    done = run.wait_final(timeout=20)
    assert done["status"] == "KILLED" and "time-to-live" in done["status_reason"]
    # STOPPING and KILLING are written by the control workflow, which notices them too.
    assert status_notices(receiver, "/ttl", "KILLED") == ["PENDING", "INITIALIZING", "RUNNING", "STOPPING",
                                                          "KILLING", "KILLED"]


def test_ttl_reached_between_tasks_ends_stopped(control, repo):
    run = Run(control.client("DEMO"), repo, "sleeps.yml", executionTtl=3)
    done = run.wait_final(timeout=20)
    assert done["status"] == "STOPPED" and "time-to-live of 3 min reached" in done["status_reason"]
    started = [e["task"] for e in run.events() if e["event"] == "playbook_on_task_start"]
    assert "third sleep" not in started


def test_a_worker_killed_mid_run_is_failure_worker_lost_and_can_restart(control, repo, receiver):
    run = Run(control.client("DEMO"), repo, "long.yml", properties={"seconds": 8},
              callbacks=[{"url": f"{receiver.url}/lost", "level": "ERROR"}])
    run.wait_task_started("long sleep")
    ansible = run.processes()[0]
    worker = next(parent for parent in ansible.parents() if "localmode.worker_process" in " ".join(parent.cmdline()))
    os.kill(worker.pid, signal.SIGKILL)
    killed_at = time.time()
    done = run.wait_final(timeout=30)
    assert done["status"] == "FAILURE" and done["status_reason"] == "worker lost"
    assert status_notices(receiver, "/lost", "FAILURE") == ["FAILURE"]  # noticed by the execution workflow
    assert time.time() - killed_at < HEARTBEAT + 10  # the heartbeat window and the workflow's reaction
    assert run.processes() == []  # local mode ends what the lost worker left running, as Lambda would
    restarted = run.post("restart")
    assert restarted.status_code == 202
    assert run.wait_final(timeout=60)["status"] == "SUCCESS"


def test_never_more_than_four_run_at_once_and_all_end(control, repo):
    api = control.client("DEMO")
    runs = [Run(api, repo, "quick.yml") for _ in range(6)]
    most = 0
    deadline = time.time() + 90
    while time.time() < deadline:
        statuses = [run.get()["status"] for run in runs]
        most = max(most, sum(status in ("INITIALIZING", "RUNNING") for status in statuses))
        if all(status in FINAL for status in statuses):
            break
        time.sleep(0.05)
    assert statuses == ["SUCCESS"] * 6, [(run.get()["status"], run.get()["status_reason"]) for run in runs]
    assert most <= 4, most


def test_races_end_in_exactly_one_final_status(control, repo):
    api = control.client("DEMO")
    # stop then kill
    run = Run(api, repo, "long.yml")
    run.wait_task_started("long sleep")
    assert run.post("stop").status_code == 202 and run.post("kill").status_code == 202
    assert run.wait_final(timeout=15)["status"] == "KILLED"
    # kill twice, at once
    run = Run(api, repo, "long.yml")
    run.wait_task_started("long sleep")
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(run.post("kill").status_code)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [202, 202]
    assert run.wait_final(timeout=15)["status"] == "KILLED"
    # stop at the moment of success
    run = Run(api, repo, "quick.yml")
    run.wait(lambda current: current["status"] == "RUNNING")
    time.sleep(0.8)
    answer = run.post("stop")
    assert answer.status_code in (202, 409), answer.text
    final = run.wait_final(timeout=15)
    assert final["status"] in ("STOPPED", "SUCCESS")
    time.sleep(1)
    assert run.get()["status"] == final["status"]
    # stop or kill of an ended execution
    assert_error(run.post("stop"), 409)
    assert_error(run.post("kill"), 409)


def test_bad_expiry_is_400(control, repo):
    run = Run(control.client("DEMO"), repo, "quick.yml")
    assert_error(run.post("stop", {"expiryDuration": -1}), 400, "expiryDuration")
    assert_error(run.post("kill", {"expiryDuration": "soon"}), 400, "expiryDuration")
