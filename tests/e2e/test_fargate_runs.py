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

from tests.e2e.conftest import running_local_mode
from tests.e2e.realparts import make_repo
from tests.e2e.runs import FINAL, Run, environ_of
from tests.waiting import wait_until

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


@pytest.fixture(scope="module")
def routing(tmp_path_factory):
    yield from running_local_mode(tmp_path_factory, "fargate-routing", env=ROUTING_ENV)


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    yield from running_local_mode(tmp_path_factory, "fargate-control", env=CONTROL_ENV)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fargate-repo") / "plays"
    make_repo(path, {"quick.yml": QUICK, "seventy_five.yml": SEVENTY_FIVE, "sleeps.yml": SLEEPS, "long.yml": LONG})
    return path


class FargateRun(Run):
    """A run that may be on Fargate: its task is a process of its own."""

    def __init__(self, api, repo: Path, playbook: str, ttl: int) -> None:
        super().__init__(api, repo, playbook, timeout=150, executionTtl=ttl)

    def tasks(self) -> list[psutil.Process]:
        """The Fargate task processes running this execution (runner_lambda.fargate with its message)."""
        return [process for process in psutil.process_iter() if "runner_lambda.fargate" in " ".join(_cmdline(process))
                and self.id in environ_of(process).get("RUNNER_RUN_MESSAGE", "")]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def test_a_ttl_that_fits_in_a_lambda_invocation_runs_on_lambda(routing, repo):
    run = FargateRun(routing.client("DEMO"), repo, "quick.yml", ttl=1)
    assert run.started["compute"] == "lambda"
    done = run.wait_final()
    assert done["status"] == "SUCCESS" and done["compute"] == "lambda"
    assert run.listed()["compute"] == "lambda"
    assert routing.queue_drained("RUNNER_FARGATE_QUEUE_URL")


def test_a_run_longer_than_lambda_allows_succeeds_on_fargate(routing, repo):
    # GIVEN a 75 s playbook under a TTL of 3 minutes: more than a 120 s Lambda invocation can hold
    run = FargateRun(routing.client("DEMO"), repo, "seventy_five.yml", ttl=3)
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
    run = FargateRun(control.client("DEMO"), repo, "sleeps.yml", ttl=600)
    assert run.started["compute"] == "fargate"
    run.wait_task_started("first sleep")
    answer = run.post("stop", {"expiryDuration": 0})
    assert answer.status_code == 202 and answer.json()["status"] == "STOPPING"
    done = run.wait_final()
    assert done["status"] == "STOPPED" and "stopped by" in done["status_reason"]
    assert [e["task"] for e in run.events() if e["event"] == "playbook_on_task_start"] == ["first sleep"]


def test_kill_on_fargate_ends_every_process_of_the_run_and_the_task(control, repo):
    # GIVEN a Fargate run whose long task is running
    run = FargateRun(control.client("DEMO"), repo, "long.yml", ttl=600)
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
    run = FargateRun(control.client("DEMO"), repo, "long.yml", ttl=20)
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
