"""One execution of a new job of account DEMO, driven and observed over HTTP (the e2e tests' shared helper)."""
from __future__ import annotations

from pathlib import Path

import psutil

from tests.waiting import wait_for

FINAL = {"SUCCESS", "FAILURE", "INIT_FAILURE", "STOPPED", "KILLED"}


def environ_of(process: psutil.Process) -> dict:
    """A process's environment; empty when it is gone or not ours to read."""
    try:
        return process.environ()
    except psutil.Error:
        return {}


class Run:
    """A job of `playbook` on localhost (`job`: more of the job's body), started once."""

    def __init__(self, api, repo: Path, playbook: str, timeout: float = 90, **job) -> None:
        self.api = api
        self.timeout = timeout  # the default of every wait
        body = {"repository": {"url": f"file://{repo}", "defaultPlaybook": playbook},
                "hosts": [{"id": "localhost"}], **job}
        self.job = api.post("/jobs/DEMO", json=body).json()[0]
        answer = api.post(f"/jobs/DEMO/{self.job['id']}/start", json={})
        assert answer.status_code == 201, answer.text
        self.started = answer.json()
        self.id = self.started["execution_id"]
        self.path = f"/jobs/DEMO/{self.job['id']}/executions/{self.id}"

    def get(self) -> dict:
        return self.api.get(self.path).json()

    def listed(self) -> dict:
        """The execution as the job's list answers it."""
        results = self.api.get(f"/jobs/DEMO/{self.job['id']}/executions").json()["results"]
        return next(item for item in results if item["execution_id"] == self.id)

    def events(self) -> list[dict]:
        return self.api.get(f"{self.path}/events", params={"size": 1000}).json()["results"]

    def wait(self, predicate, timeout: float | None = None) -> dict:
        """The execution, once `predicate(execution)` holds."""
        return wait_for(self.get, predicate, timeout or self.timeout,
                        lambda current: f"last seen {current['status']} ({current['status_reason']})")

    def wait_final(self, timeout: float | None = None) -> dict:
        return self.wait(lambda current: current["status"] in FINAL, timeout)

    def wait_task_started(self, task: str, timeout: float | None = None) -> None:
        """Return once the run's events show `task` started; else fail saying where the run is."""
        def where(_) -> str:
            current = self.get()
            return f"task {task!r} never started; the run is {current['status']} ({current['status_reason']})"

        wait_for(self.events, lambda found: any(e["event"] == "runner_on_start" and e["task"] == task for e in found),
                 timeout or self.timeout, where)

    def post(self, action: str, body: dict | None = None):
        return self.api.post(f"{self.path}/{action}", json=body if body is not None else {})

    def processes(self) -> list[psutil.Process]:
        """The run's processes (ansible and what it started), by the marker every one of them carries."""
        marker = f"{self.id}-{self.get()['attempt']}"
        return [process for process in psutil.process_iter() if environ_of(process).get("RUNNER_RUN_ID") == marker]
