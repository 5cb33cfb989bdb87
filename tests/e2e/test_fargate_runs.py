"""Long runs on Fargate, end to end: routing by TTL, and stop, kill and TTL on the Fargate path.

Local mode shortens Lambda's ceiling (RUNNER_LAMBDA_TIMEOUT_SECONDS) so that the routing shows
with short playbooks: an execution whose TTL fits within the ceiling less the stop margin runs
on a Lambda-like worker, any other in a fresh sandboxed process per run, as a Fargate task
would (localmode/fargate_tasks.py, runner_lambda/fargate.py). Tests wait for states with
generous deadlines and assert outcomes, never durations.
"""
from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import LocalMode
from tests.e2e.realparts import make_repo
from tests.waiting import wait_for, wait_until

FINAL = {"SUCCESS", "FAILURE", "INIT_FAILURE", "STOPPED", "KILLED"}
QUICK = "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: quick\n      command: 'true'\n"
# Longer than Lambda's share of a 120 s ceiling (72 s once the stop margin is taken), shorter
# than a TTL of 3 minutes.
SEVENTY_FIVE = "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: long work\n      command: sleep 75\n"
SLEEPS = """- hosts: all
  gather_facts: false
  tasks:
    - name: first sleep
      command: sleep 3
    - name: second sleep
      command: sleep 3
"""
LONG = """- hosts: all
  gather_facts: false
  tasks:
    - name: long sleep
      shell: "sleep 120 & sleep 120"
"""
# Real minutes, a 120 s Lambda ceiling: TTL 1 (60 s) fits in it, TTL 3 (180 s) does not.
ROUTING_ENV = {"RUNNER_LAMBDA_TIMEOUT_SECONDS": "120", "RUNNER_LOCAL_WORKERS": "2",
               "RUNNER_LOCAL_FARGATE_WORKERS": "2"}
# A TTL minute of 1 s and the shortest ceiling (16 s, 10 s once the margin is taken): every TTL
# from 11 "minutes" goes to Fargate, and a TTL expires within seconds.
CONTROL_ENV = {"RUNNER_LAMBDA_TIMEOUT_SECONDS": "16", "RUNNER_TTL_MINUTE_SECONDS": "1",
               "RUNNER_TTL_GRACE_SECONDS": "6", "RUNNER_KILL_WINDOW_SECONDS": "3", "RUNNER_HEARTBEAT_SECONDS": "30",
               "RUNNER_LOCAL_WORKERS": "1", "RUNNER_LOCAL_FARGATE_WORKERS": "3"}


def _local_mode(tmp_path_factory, name: str, env: dict[str, str]):
    base = tmp_path_factory.mktemp(name)
    instance = LocalMode(base / "state", base / "logs", accounts="DEMO", env=env)
    try:
        instance.start()
        yield instance
    finally:
        instance.kill()


@pytest.fixture(scope="module")
def routing(tmp_path_factory):
    yield from _local_mode(tmp_path_factory, "fargate-routing", ROUTING_ENV)


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    yield from _local_mode(tmp_path_factory, "fargate-control", CONTROL_ENV)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fargate-repo") / "plays"
    make_repo(path, {"quick.yml": QUICK, "seventy_five.yml": SEVENTY_FIVE, "sleeps.yml": SLEEPS, "long.yml": LONG})
    return path


class Run:
    """One execution of a new job, driven over HTTP."""

    def __init__(self, api, repo: Path, playbook: str, ttl: int) -> None:
        self.api = api
        body = {"repository": {"url": f"file://{repo}", "defaultPlaybook": playbook},
                "hosts": [{"id": "localhost"}], "executionTtl": ttl}
        self.job = api.post("/jobs/DEMO", json=body).json()[0]
        answer = api.post(f"/jobs/DEMO/{self.job['id']}/start", json={})
        assert answer.status_code == 201, answer.text
        self.started = answer.json()
        self.id = self.started["execution_id"]
        self.path = f"/jobs/DEMO/{self.job['id']}/executions/{self.id}"

    def get(self) -> dict:
        return self.api.get(self.path).json()

    def listed(self) -> dict:
        results = self.api.get(f"/jobs/DEMO/{self.job['id']}/executions").json()["results"]
        return next(item for item in results if item["execution_id"] == self.id)

    def events(self) -> list[dict]:
        return self.api.get(f"{self.path}/events", params={"size": 1000}).json()["results"]

    def wait(self, predicate, timeout: float = 150) -> dict:
        return wait_for(self.get, predicate, timeout,
                        lambda current: f"last seen {current['status']} ({current['status_reason']})")

    def wait_final(self, timeout: float = 150) -> dict:
        return self.wait(lambda current: current["status"] in FINAL, timeout)

    def wait_task_started(self, task: str, timeout: float = 120) -> None:
        wait_for(self.events, lambda found: any(e["event"] == "runner_on_start" and e["task"] == task for e in found),
                 timeout, lambda _: f"task {task!r} never started; the run is {self.get()['status']}")

    def post(self, action: str, body: dict | None = None):
        return self.api.post(f"{self.path}/{action}", json=body if body is not None else {})

    def processes(self) -> list[psutil.Process]:
        """The run's processes (ansible and what it started), by the marker every one of them carries."""
        marker = f"{self.id}-{self.get()['attempt']}"
        return [process for process in _processes() if _environ(process).get("RUNNER_RUN_ID") == marker]

    def tasks(self) -> list[psutil.Process]:
        """The Fargate task processes running this execution (runner_lambda.fargate with its message)."""
        return [process for process in _processes() if "runner_lambda.fargate" in " ".join(_cmdline(process))
                and self.id in _environ(process).get("RUNNER_RUN_MESSAGE", "")]


def _processes() -> list[psutil.Process]:
    return list(psutil.process_iter())


def _environ(process: psutil.Process) -> dict:
    try:
        return process.environ()
    except psutil.Error:
        return {}


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def test_a_ttl_that_fits_in_a_lambda_invocation_runs_on_lambda(routing, repo):
    run = Run(routing.client("DEMO"), repo, "quick.yml", ttl=1)
    assert run.started["compute"] == "lambda"
    done = run.wait_final()
    assert done["status"] == "SUCCESS" and done["compute"] == "lambda"
    assert run.listed()["compute"] == "lambda"
    assert routing.queue_drained("RUNNER_FARGATE_QUEUE_URL")


def test_a_run_longer_than_lambda_allows_succeeds_on_fargate(routing, repo):
    # GIVEN a 75 s playbook under a TTL of 3 minutes: more than a 120 s Lambda invocation can hold
    run = Run(routing.client("DEMO"), repo, "seventy_five.yml", ttl=3)
    assert run.started["compute"] == "fargate"
    # WHEN it runs, THEN it runs in a task of its own and succeeds
    run.wait_task_started("long work")
    assert run.tasks(), "the run is not in a Fargate task process"
    done = run.wait_final(timeout=240)
    assert done["status"] == "SUCCESS", done
    assert done["compute"] == "fargate" and run.listed()["compute"] == "fargate"
    assert [e["task"] for e in run.events() if e["event"] == "runner_on_ok"] == ["long work"]
    # The task is discarded with its run.
    wait_until(lambda: run.tasks() == [], message="the Fargate task outlived its run")


def test_stop_on_fargate_lets_the_running_task_finish_and_starts_no_other(control, repo):
    run = Run(control.client("DEMO"), repo, "sleeps.yml", ttl=600)
    assert run.started["compute"] == "fargate"
    run.wait_task_started("first sleep")
    answer = run.post("stop", {"expiryDuration": 0})
    assert answer.status_code == 202 and answer.json()["status"] == "STOPPING"
    done = run.wait_final()
    assert done["status"] == "STOPPED" and "stopped by" in done["status_reason"]
    assert [e["task"] for e in run.events() if e["event"] == "playbook_on_task_start"] == ["first sleep"]


def test_kill_on_fargate_ends_every_process_of_the_run_and_the_task(control, repo):
    # GIVEN a Fargate run whose long task is running
    run = Run(control.client("DEMO"), repo, "long.yml", ttl=600)
    assert run.started["compute"] == "fargate"
    run.wait_task_started("long sleep")
    wait_until(run.processes, message="the run's processes never showed before the kill")
    assert run.tasks(), "the run is not in a Fargate task process"
    # WHEN it is killed
    answer = run.post("kill")
    assert answer.status_code == 202 and answer.json()["status"] == "KILLING"
    # THEN it ends KILLED, no process of the run is left, and the task itself has ended
    done = run.wait_final()
    assert done["status"] == "KILLED" and "killed by" in done["status_reason"]
    wait_until(lambda: run.processes() == [], message="processes of the killed run were left running")
    wait_until(lambda: run.tasks() == [], message="the Fargate task outlived its killed run")


def test_ttl_on_fargate_stops_then_kills_after_the_grace(control, repo):
    # GIVEN a Fargate run of a 120 s task under a TTL of 20 "minutes" (20 s here)
    run = Run(control.client("DEMO"), repo, "long.yml", ttl=20)
    assert run.started["compute"] == "fargate"
    run.wait_task_started("long sleep")
    assert run.get()["status"] == "RUNNING", "the task should start before the TTL is reached"
    # WHEN the TTL is reached, THEN the run is stopped, then killed once the grace is over
    stopping = run.wait(lambda current: current["status"] in {"STOPPING", *FINAL})
    assert stopping["status"] == "STOPPING" and "time-to-live of 20 min reached" in stopping["status_reason"]
    done = run.wait_final()
    assert done["status"] == "KILLED" and "time-to-live" in done["status_reason"]
    assert done["compute"] == "fargate"
    wait_until(lambda: run.processes() == [] and run.tasks() == [], message="the run outlived its TTL")
