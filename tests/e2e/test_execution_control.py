"""Stop, kill, time-to-live, lost workers, concurrency and races, end to end with real ansible.

Local mode runs with short windows (a TTL minute of 1 s, a 3 s kill window) so that what
takes minutes on AWS takes seconds here; the code paths are the same. Tests wait for states and
events with generous deadlines and assert outcomes; how fast a stop or a kill takes effect is not
asserted here. That something did not happen is checked once a signal shows it no longer can (the
execution's workflow has ended).
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from tests.e2e.conftest import LocalMode, assert_error, running_local_mode
from tests.e2e.realparts import Receiver, make_repo
from tests.e2e.runs import FINAL, Run
from tests.waiting import wait_for, wait_until

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
# The FIFO test's run, and how far apart two runs granted slots at the same moment may start (their
# run messages reach the workers in any order): a run of it takes twice as long at the very least.
PACED = "- hosts: all\n  gather_facts: false\n  tasks:\n    - command: sleep 3\n"
SLACK_MS = 1500
# The heartbeat window: a lost worker is noticed once it is over, so it bounds the lost-worker test's
# length; a live worker beats every quarter of it, from the moment the run handoff gives it the
# Run task's token, so it must cover that handoff on a loaded 2-core machine. (Waiting in the run
# queue does not count: tests/e2e/test_queued_runs.py.)
HEARTBEAT = 30
CONTROL_ENV = {"RUNNER_TTL_MINUTE_SECONDS": "1", "RUNNER_TTL_GRACE_SECONDS": "6", "RUNNER_KILL_WINDOW_SECONDS": "3",
               "RUNNER_HEARTBEAT_SECONDS": str(HEARTBEAT), "RUNNER_LOCAL_WORKERS": "6", "RUNNER_MAX_CONCURRENT_PER_ACCOUNT": "4"}


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    yield from running_local_mode(tmp_path_factory, "control", env=CONTROL_ENV)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("control-repo") / "plays"
    make_repo(path, {"sleeps.yml": SLEEPS, "long.yml": LONG, "quick.yml": QUICK, "paced.yml": PACED})
    return path


def test_stop_lets_the_running_task_finish_and_starts_no_other(control, repo):
    run = Run(control.client("DEMO"), repo, "sleeps.yml")
    run.wait_task_started("first sleep")
    answer = run.post("stop", {"expiryDuration": 0})
    assert answer.status_code == 202 and answer.json()["status"] == "STOPPING"
    done = run.wait_final()
    assert done["status"] == "STOPPED" and "stopped by" in done["status_reason"]
    tasks_started = [e["task"] for e in run.events() if e["event"] == "playbook_on_task_start"]
    results = [(e["event"], e["task"]) for e in run.events() if e["event"].startswith("runner_on_") and e["event"] != "runner_on_start"]
    assert tasks_started == ["first sleep"] and results == [("runner_on_ok", "first sleep")]


def test_kill_ends_the_run_and_every_process_of_it(control, repo):
    # GIVEN a run whose long task is running, its processes visible
    run = Run(control.client("DEMO"), repo, "long.yml")
    run.wait_task_started("long sleep")
    wait_until(run.processes, message="the run's processes never showed before the kill")
    # WHEN it is killed
    answer = run.post("kill")
    assert answer.status_code == 202 and answer.json()["status"] == "KILLING"
    # THEN it ends KILLED and none of its processes is left
    done = run.wait_final()
    assert done["status"] == "KILLED" and "killed by" in done["status_reason"]
    wait_until(lambda: run.processes() == [], message="the run's processes outlived the kill")


def test_stop_kill_or_ttl_of_a_waiting_execution_ends_it_without_running(control, repo):
    # GIVEN every run slot of the account taken, and three executions waiting for one, the third
    # with a time-to-live of 3 (a TTL minute is 1 s here)
    api = control.client("DEMO")
    blockers = [Run(api, repo, "long.yml", properties={"seconds": 20}) for _ in range(4)]
    for blocker in blockers:
        blocker.wait(lambda current: current["status"] == "RUNNING")
    waiting_stop = Run(api, repo, "quick.yml")
    waiting_kill = Run(api, repo, "quick.yml")
    waiting_ttl = Run(api, repo, "quick.yml", executionTtl=3)
    for waiting in (waiting_stop, waiting_kill):  # their workflows are parked in TakeSlot, on the waiting list
        wait_until(lambda: control.waiting_for_slot(waiting.id),
                   message=f"the workflow of {waiting.id} never waited for a run slot")
    assert waiting_stop.get()["status"] == "PENDING"
    # WHEN one is stopped and another killed, and the third's TTL passes
    assert waiting_stop.post("stop").json()["status"] == "STOPPED"
    assert waiting_kill.post("kill").json()["status"] == "KILLED"
    # THEN all three leave the waiting list: their workflows end while every slot is still taken
    for ended in (waiting_stop, waiting_kill, waiting_ttl):
        wait_until(lambda: control.workflow_ended(ended.id), message=f"the workflow of {ended.id} never ended")
    assert all(blocker.get()["status"] == "RUNNING" for blocker in blockers)
    for blocker in blockers:
        blocker.post("kill")
    for blocker in blockers:
        blocker.wait_final()
    # AND nothing of them ran: no events, no timers, the status they were given
    for ended in (waiting_stop, waiting_kill, waiting_ttl):
        assert ended.events() == [] and ended.get()["timers"] == []
    assert waiting_stop.get()["status"] == "STOPPED" and waiting_kill.get()["status"] == "KILLED"
    expired = waiting_ttl.get()
    assert expired["status"] == "STOPPED" and "time-to-live" in expired["status_reason"], expired


def test_stop_with_expiry_escalates_to_a_kill(control, repo):
    run = Run(control.client("DEMO"), repo, "long.yml")
    run.wait_task_started("long sleep")
    run.post("stop", {"expiryDuration": 1})
    done = run.wait_final()
    assert done["status"] == "KILLED" and "not stopped within 1 s" in done["status_reason"]
    assert run.processes() == []


@pytest.fixture(scope="module")
def receiver():
    made = Receiver()
    yield made
    made.server.shutdown()


def status_notices(receiver, path: str, last: str) -> list[str]:
    bodies = receiver.wait_for(path, lambda found: any(body["status"] == last for body in found))
    return [body["status"] for body in bodies if body["type"] == "status"]


def test_ttl_reached_stops_then_kills_after_the_grace(control, repo, receiver):
    # GIVEN a run of a 60 s task under a time-to-live of 20 "minutes" (20 s here): room for the task
    # to start first, even on a busy machine
    run = Run(control.client("DEMO"), repo, "long.yml", executionTtl=20,
              callbacks=[{"url": f"{receiver.url}/ttl", "level": "DEBUG"}])
    run.wait_task_started("long sleep")
    assert run.get()["status"] == "RUNNING", "the task should start before the time-to-live is reached"
    # WHEN the time-to-live is reached, THEN the run is stopped, and killed once the grace is over
    stopping = run.wait(lambda current: current["status"] in {"STOPPING", *FINAL})
    assert stopping["status"] == "STOPPING" and "time-to-live of 20 min reached" in stopping["status_reason"], \
        (stopping["status_reason"], run.events()[-3:])
    done = run.wait_final()
    assert done["status"] == "KILLED" and "time-to-live" in done["status_reason"]
    # STOPPING and KILLING are written by the control workflow, which notices them too.
    assert status_notices(receiver, "/ttl", "KILLED") == ["PENDING", "INITIALIZING", "RUNNING", "STOPPING",
                                                          "KILLING", "KILLED"]


def test_ttl_reached_between_tasks_ends_stopped(control, repo):
    run = Run(control.client("DEMO"), repo, "sleeps.yml", executionTtl=3)
    done = run.wait_final()
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
    done = run.wait_final()  # once the heartbeat window is over, the execution workflow notices
    assert done["status"] == "FAILURE" and done["status_reason"] == "worker lost"
    assert status_notices(receiver, "/lost", "FAILURE") == ["FAILURE"]  # noticed by the execution workflow
    # Local mode ends what the lost worker left running, as Lambda would.
    wait_until(lambda: run.processes() == [], message="the lost worker's processes were left running")
    restarted = run.post("restart")
    assert restarted.status_code == 202
    assert run.wait_final()["status"] == "SUCCESS"


def test_never_more_than_four_run_at_once_and_all_end(control, repo):
    api = control.client("DEMO")
    runs = [Run(api, repo, "quick.yml") for _ in range(6)]
    samples: list[list[str]] = []  # the six statuses, sampled until all have ended

    def sample() -> list[str]:
        samples.append([run.get()["status"] for run in runs])
        return samples[-1]

    statuses = wait_for(sample, lambda current: all(status in FINAL for status in current), interval=0.05,
                        message="not every run ended")
    assert statuses == ["SUCCESS"] * 6, [(run.get()["status"], run.get()["status_reason"]) for run in runs]
    most = max(sum(status in ("INITIALIZING", "RUNNING") for status in taken) for taken in samples)
    assert most <= 4, most


def running_at_once(timers: list[dict]) -> int:
    """The most timers (claim to end) open at one instant."""
    moments = sorted([(timer["start"], 1) for timer in timers] + [(timer["end"], -1) for timer in timers])
    most = current = 0
    for _, step in moments:  # at a tie, an end (-1) sorts before a start: a slot handed over is not two
        current += step
        most = max(most, current)
    return most


def slots_held(control: LocalMode) -> list[str]:
    """The run slot entries of account DEMO (holders, waiters): none once every workflow has ended."""
    items = control.aws("dynamodb").query(
        TableName=control.emulator_environment()["RUNNER_SLOTS_TABLE"], ConsistentRead=True,
        KeyConditionExpression="accountAlias = :account", ExpressionAttributeValues={":account": {"S": "DEMO"}})
    return [item["entry"]["S"] for item in items["Items"] if not item["entry"]["S"].startswith("next")]


def test_queued_runs_start_first_in_first_out_four_at_a_time(control, repo):
    # GIVEN twelve executions started one after the other, while four run slots are free
    api = control.client("DEMO")
    runs = [Run(api, repo, "paced.yml") for _ in range(12)]
    # WHEN they all end
    ended = [run.wait_final(timeout=180) for run in runs]
    # THEN every one succeeded, no more than four ran at any instant,
    assert [execution["status"] for execution in ended] == ["SUCCESS"] * 12, [e["status_reason"] for e in ended]
    timers = [execution["timers"][0] for execution in ended]
    assert running_at_once(timers) <= 4
    # AND they started in the order they were submitted: each waited for a slot behind every earlier
    # one. Four granted together leave the run queue in any order, hence the slack, far below one run.
    starts = [timer["start"] for timer in timers]
    late = [(earlier, later) for later in range(12) for earlier in range(later)
            if starts[later] < starts[earlier] - SLACK_MS]
    assert not late, f"started before an earlier submission: {late} (starts {starts})"
    wait_until(lambda: slots_held(control) == [], message="a run slot is still held after every run ended")


def test_a_workflow_killed_mid_run_gives_its_slot_back(control, repo):
    # GIVEN every run slot of the account taken, and one execution waiting for one
    api = control.client("DEMO")
    blockers = [Run(api, repo, "long.yml", properties={"seconds": 40}) for _ in range(4)]
    for blocker in blockers:
        blocker.wait(lambda current: current["status"] == "RUNNING")
    waiting = Run(api, repo, "quick.yml")
    wait_until(lambda: control.waiting_for_slot(waiting.id), message="the fifth execution never waited for a slot")
    # WHEN the workflow of one running execution is aborted (it never reaches its ReleaseSlot)
    control.aws("stepfunctions").stop_execution(executionArn=control.workflow(blockers[0].id)["executionArn"],
                                                error="Test", cause="a workflow killed mid-run")
    # THEN its slot comes back and goes to the waiting execution, which runs while the others still run
    assert waiting.wait_final(timeout=120)["status"] == "SUCCESS"
    assert [blocker.get()["status"] for blocker in blockers[1:]] == ["RUNNING"] * 3
    for blocker in blockers:
        blocker.post("kill")
    for blocker in blockers:
        blocker.wait_final()
    wait_until(lambda: slots_held(control) == [], message="a run slot is still held after every run ended")


def test_races_end_in_exactly_one_final_status(control, repo):
    api = control.client("DEMO")
    # stop then kill
    run = Run(api, repo, "long.yml")
    run.wait_task_started("long sleep")
    assert run.post("stop").status_code == 202 and run.post("kill").status_code == 202
    assert run.wait_final()["status"] == "KILLED"
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
    assert run.wait_final()["status"] == "KILLED"
    # stop at the moment of success: while the only task runs, so stop and success race
    run = Run(api, repo, "quick.yml")
    run.wait_task_started("command")
    answer = run.post("stop")
    assert answer.status_code in (202, 409), answer.text
    final = run.wait_final()
    assert final["status"] in ("STOPPED", "SUCCESS")
    # Its workflow writes last: once it has ended, the final status can no longer change.
    wait_until(lambda: control.workflow_ended(run.id), message=f"the workflow of {run.id} never ended")
    assert run.get()["status"] == final["status"]
    # stop or kill of an ended execution
    assert_error(run.post("stop"), 409)
    assert_error(run.post("kill"), 409)


def test_bad_expiry_is_400(control, repo):
    run = Run(control.client("DEMO"), repo, "quick.yml")
    assert_error(run.post("stop", {"expiryDuration": -1}), 400, "expiryDuration")
    assert_error(run.post("kill", {"expiryDuration": "soon"}), 400, "expiryDuration")
