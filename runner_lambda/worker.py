"""One attempt of an execution, from the run message to the recorded result."""
from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from chalicelib.platform import models
from chalicelib.executions import states
from chalicelib.platform.config import Settings
from chalicelib.executions.service import RUN_KEY_DEFAULT, ExecutionService, run_key_path
from chalicelib.jobs.service import JobService
from chalicelib.jobs.spec import SECRET_DEFAULT_KEY, SECRET_REPO_KEY, SECRET_REPO_PASSWORD, host_key_path
from chalicelib.callbacks.notices import Notifier
from chalicelib.platform.models import Execution, ExecutionEvent, Job
from runner_lambda.checkout import Checkout, CheckoutError, Credentials
from runner_lambda.playbook import PlaybookRun, run_playbook
from runner_lambda.reporting import KEEP, EventSink, Heartbeat, Masker, claim, finish, mark_running, report_result
from runner_lambda.processes import kill_tree
from runner_lambda.supervision import Supervisor
from runner_lambda.workspace import Workspace, WorkspaceError, build_inventory

logger = logging.getLogger("runner.worker")


@dataclass(frozen=True)
class RunMessage:
    """The run queue's message: which attempt of which execution, and the workflow's task token."""

    account_alias: str
    job_id: str
    execution_id: str
    attempt: int
    task_token: str

    @classmethod
    def parse(cls, body: str) -> "RunMessage":
        data = json.loads(body)
        return cls(data["accountAlias"], data["jobId"], data["executionId"], int(data["attempt"]),
                   data["taskToken"])


@dataclass
class Dependencies:
    """The clients and services a worker uses."""

    settings: Settings
    jobs: JobService
    executions: ExecutionService
    stepfunctions: Any
    notifier: Notifier | None = None


def worker_name() -> str:
    """Who runs this attempt (for the logs)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _dynamic_hosts(account: str, job_id: str) -> list[dict]:
    hosts: list[dict] = []
    for job in Job.query(account):
        if job.job_id != job_id:
            hosts.extend(json.loads(job.spec)["hosts"])
    return hosts


class Attempt:
    """Everything one attempt does; `run` never raises for an outcome, only for a fault of ours."""

    def __init__(self, message: RunMessage, deps: Dependencies, lambda_context: Any = None) -> None:
        self.message = message
        self.deps = deps
        self.lambda_context = lambda_context
        self.masker = Masker([])

    def run(self) -> str:
        """Run the attempt; answer its final status (or "duplicate")."""
        message = self.message
        models.bind()
        execution = claim(message.job_id, message.execution_id, message.attempt, message.task_token, worker_name())
        if execution is None:
            self._close_if_ended()
            return "duplicate"
        self._notify(execution, states.INITIALIZING)
        heartbeat = Heartbeat(self.deps.stepfunctions, message.task_token,
                              max(1.0, self.deps.settings.heartbeat_seconds / 4)).start()
        status = states.FAILURE
        with Workspace() as workspace:
            supervisor = Supervisor(execution, f"{message.execution_id}-{message.attempt}",
                                    workspace.path / "stop", self.lambda_context,
                                    self.deps.settings.ceiling_margin_seconds).start()
            try:
                status = self._run_claimed(execution, workspace, supervisor)
            except Exception:
                logger.exception("attempt %d of execution %s failed in the worker", message.attempt, message.execution_id)
                self._finish(execution, states.FAILURE, reason="the worker failed unexpectedly; see the service logs")
            finally:
                supervisor.stop()
                kill_tree(supervisor.run_id)  # nothing of the run outlives it
                heartbeat.stop()
                report_result(self.deps.stepfunctions, message.task_token,
                              {"executionId": message.execution_id, "attempt": message.attempt, "status": status})
        return status

    def _notify(self, execution: Execution, status: str) -> None:
        if self.deps.notifier is not None:
            self.deps.notifier.status_changed(execution, status)

    def _notify_events(self, execution: Execution, batch: list[ExecutionEvent]) -> None:
        if self.deps.notifier is not None:
            self.deps.notifier.events(execution, states.RUNNING, [int(event.seq) for event in batch])

    def _finish(self, execution: Execution, status: str, **details: Any) -> bool:
        """Record the final status (see reporting.finish) and notice it."""
        done = finish(execution, status, **details)
        if done:
            self._notify(execution, status)
        return done

    def _close_if_ended(self) -> None:
        """A message for an attempt that ended without running (stopped while PENDING): end its task."""
        message = self.message
        try:
            current = Execution.get(message.job_id, message.execution_id, consistent_read=True)
        except Exception:  # noqa: BLE001 - nothing to close
            return
        if int(current.attempt) == message.attempt and current.status in states.FINAL:
            report_result(self.deps.stepfunctions, message.task_token,
                          {"executionId": message.execution_id, "attempt": message.attempt, "status": current.status})

    def _ended_before_running(self, execution: Execution, supervisor: Supervisor) -> str | None:
        """STOPPED or KILLED when a stop or kill arrived before the playbook started."""
        supervisor.check()
        if supervisor.over.is_set():
            return supervisor.status
        if supervisor.killed.is_set():
            self._finish(execution, states.KILLED, reason=KEEP)
            return states.KILLED
        if supervisor.stop_requested.is_set():
            self._finish(execution, states.STOPPED, reason=KEEP)
            return states.STOPPED
        return None

    def _run_claimed(self, execution: Execution, workspace: Workspace, supervisor: Supervisor) -> str:
        message = self.message
        job = self.deps.jobs.load(message.account_alias, message.job_id)
        spec = json.loads(job.spec)
        secrets = self.deps.jobs.open_secrets(message.account_alias, message.job_id)
        run_keys = self.deps.executions.open_keys(execution)
        self.masker.add(list(secrets.values()) + list(run_keys.values()))
        repository = spec["repository"]
        try:
            checkout = Checkout(repository["url"], workspace.project, workspace.scratch, Credentials(
                username=(repository.get("credentials") or {}).get("username"),
                password=secrets.get(SECRET_REPO_PASSWORD), ssh_key=secrets.get(SECRET_REPO_KEY)))
            commit = checkout.fetch(repository["branch"], execution.pinned_commit)
            repository_log = checkout.repository_log()
            playbook = workspace.playbook(repository["defaultPlaybook"])
            run = self._prepare(workspace, execution, spec, secrets, run_keys, playbook, supervisor)
        except (CheckoutError, WorkspaceError) as exc:
            if self._finish(execution, states.INIT_FAILURE, reason=self.masker(str(exc))):
                return states.INIT_FAILURE
            return self._ended_before_running(execution, supervisor) or states.INIT_FAILURE
        if not mark_running(execution, repository_log, commit):
            return self._ended_before_running(execution, supervisor) or execution.status
        self._notify(execution, states.RUNNING)
        sink = EventSink(message.execution_id, message.attempt, self.masker, self.deps.settings.event_retention_days,
                         on_flush=lambda batch: self._notify_events(execution, batch), log_start=execution.log_start)
        try:
            result = run_playbook(run, sink.add, supervisor.should_cancel)
        finally:
            sink.close()
        if supervisor.over.is_set():
            return supervisor.status  # recorded by whoever ended the attempt; our result is late
        details = {"failed_hosts": result.failed_hosts, "stats": result.stats, "rc": result.rc}
        if supervisor.killed.is_set():
            self._finish(execution, states.KILLED, reason=KEEP, **details)
            return states.KILLED
        if supervisor.stop_requested.is_set():
            self._finish(execution, states.STOPPED, reason=KEEP, **details)
            return states.STOPPED
        status = states.SUCCESS if result.succeeded else states.FAILURE
        reason = None if result.succeeded else f"ansible-playbook ended {result.status} (rc {result.rc})"
        if not self._finish(execution, status, reason=reason, **details):
            return self._ended_before_running(execution, supervisor) or status
        return status

    def _prepare(self, workspace: Workspace, execution: Execution, spec: dict, secrets: dict[str, str],
                 run_keys: dict[str, str], playbook: str, supervisor: Supervisor) -> PlaybookRun:
        hosts = list(spec["hosts"])
        if spec.get("useDynamicInventory"):
            hosts += _dynamic_hosts(execution.account_alias, execution.job_id)
        key_files: dict[str, str] = {}
        for index, host_id in enumerate(dict.fromkeys([host["id"] for host in hosts] + list(execution.target_hosts))):
            pem = run_keys.get(run_key_path(host_id)) or secrets.get(host_key_path(host_id))
            if pem:
                key_files[host_id] = workspace.write_key(f"host-{index}", pem)
        default_pem = run_keys.get(RUN_KEY_DEFAULT) or secrets.get(SECRET_DEFAULT_KEY)
        default_key = workspace.write_key("default", default_pem) if default_pem else None
        inventory, limit = build_inventory(hosts, list(execution.target_hosts), key_files, default_key)
        return PlaybookRun(private_data_dir=str(workspace.path), project_dir=str(workspace.project),
                           playbook=playbook, inventory=workspace.write_inventory(inventory), limit=limit,
                           extravars=spec.get("properties") or {}, tags=spec.get("playbookTags") or [],
                           run_id=supervisor.run_id, stop_file=str(supervisor.stop_file))
