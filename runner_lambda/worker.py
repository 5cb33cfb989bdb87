"""One attempt of an execution, from the run message to the recorded result."""
from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import DoesNotExist

from chalicelib.platform import models
from chalicelib.executions import states
from chalicelib.platform.config import Settings
from chalicelib.executions.service import RUN_KEY_DEFAULT, ExecutionService, run_key_path
from chalicelib.jobs.service import JobService
from chalicelib.jobs.spec import SECRET_DEFAULT_KEY, SECRET_REPO_KEY, SECRET_REPO_PASSWORD, host_key_path
from chalicelib.callbacks.notices import Notifier
from chalicelib.executions.tasks import TaskMessage, end_task, queue_output, run_output
from chalicelib.platform.models import Execution, ExecutionEvent, Job
from runner_lambda.checkout import Checkout, CheckoutError, Credentials
from runner_lambda.galaxy import GalaxyError, GalaxyInstaller, InstallCache, Installed, playbook_environment
from runner_lambda.playbook import PlaybookRun, galaxy_process_environment, run_playbook
from runner_lambda.masking import Masker
from runner_lambda.reporting import (
    KEEP, EventSink, Heartbeat, RunTask, claim, finish, mark_running, report_result, run_token_of,
)
from runner_lambda.processes import kill_tree
from runner_lambda.supervision import Supervisor
from runner_lambda.workspace import Workspace, WorkspaceError, build_inventory

logger = logging.getLogger("runner.worker")


# The run queue's message: which attempt of which execution, and the token of the workflow's
# Queue task. The Queue task only waits for a claim; the Run task, whose heartbeats watch the run,
# starts after it, and its token reaches the worker through the execution's row
# (chalicelib/executions/handoff.py).
RunMessage = TaskMessage


@dataclass
class Dependencies:
    """The clients and services a worker uses."""

    settings: Settings
    jobs: JobService
    executions: ExecutionService
    stepfunctions: Any
    notifier: Notifier | None = None
    # Galaxy installs of this environment (and of the stack's bucket); None: installed every time.
    galaxy_cache: InstallCache | None = None


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
        # Every secret the run knows, once opened: what the worker writes or sends is masked with it.
        self.masker = Masker()

    def run(self) -> str:
        """Run the attempt; answer its final status (or "duplicate")."""
        message = self.message
        models.bind()
        execution = claim(message.job_id, message.execution_id, message.attempt, worker_name())
        if execution is None:
            self._answer_unclaimed()
            return "duplicate"
        self._leave_queue(execution)
        self._notify(execution, states.INITIALIZING)
        run_task = RunTask()
        heartbeat = Heartbeat(self.deps.stepfunctions, run_task,
                              max(1.0, self.deps.settings.heartbeat_seconds / 4)).start()
        status = states.FAILURE
        with Workspace() as workspace:
            supervisor = Supervisor(execution, f"{message.execution_id}-{message.attempt}",
                                    workspace.path / "stop", self.lambda_context,
                                    self.deps.settings.ceiling_margin_seconds, run_task=run_task).start()
            try:
                status = self._run_claimed(execution, workspace, supervisor)
            except Exception:
                logger.exception("attempt %d of execution %s failed in the worker", message.attempt, message.execution_id)
                self._finish(execution, states.FAILURE, reason="the worker failed unexpectedly; see the service logs")
            finally:
                supervisor.stop()
                kill_tree(supervisor.run_id)  # nothing of the run outlives it
                heartbeat.stop()
                self._end_run(execution, run_task, status)
        return status

    def _leave_queue(self, execution: Execution) -> None:
        """End the workflow's Queue task now that the attempt is claimed: its Run task (and heartbeat) starts.

        Already over is fine: another delivery of this message ended it (see _answer_unclaimed), or
        the workflow stopped waiting, in which case it records the attempt's end and the supervisor
        sees it. If it cannot be ended at all, the run is not started: the attempt is recorded as
        failed, and the message comes back (the error is raised) to end the Queue task then.
        """
        try:
            end_task(self.deps.stepfunctions, self.message.task_token, queue_output(True, worker=worker_name()))
        except Exception:
            logger.exception("execution %s attempt %d: the workflow's Queue task could not be ended",
                             self.message.execution_id, self.message.attempt)
            self._finish(execution, states.FAILURE, reason="the run could not be handed to its workflow")
            raise

    def _end_run(self, execution: Execution, run_task: RunTask, status: str) -> None:
        """End the workflow's Run task with the attempt's result, if its token has been handed over.

        Runs once the attempt's final status is recorded (by us, or by whoever ended it). The token
        comes from the row: our writes' answers, the supervisor's reads, else one last read. If
        none is stored by then, none will be: the run handoff stores a token only while the
        attempt is active, and ends the Run task itself when it is not. Exactly one of us sees the
        other's write, so the task is ended once.
        """
        message = self.message
        run_task.learn(execution.run_token)  # the row our last conditional write answered
        token = run_task.token or run_token_of(message.job_id, message.execution_id, message.attempt)
        if token is None:
            logger.info("execution %s attempt %d: no run token stored yet; the run handoff reports the result",
                        message.execution_id, message.attempt)
            return
        report_result(self.deps.stepfunctions, token, run_output(message.execution_id, message.attempt, status))

    def _notify(self, execution: Execution, status: str) -> None:
        if self.deps.notifier is not None:
            self.deps.notifier.status_changed(execution, status)

    def _notify_events(self, execution: Execution, batch: list[ExecutionEvent]) -> None:
        if self.deps.notifier is not None:
            self.deps.notifier.events(execution, states.RUNNING, [int(event.seq) for event in batch])

    def _finish(self, execution: Execution, status: str, **details: Any) -> bool:
        """Record the final status (see reporting.finish), masked, and notice it."""
        for name in ("reason", "failed_hosts", "stats", "repository_log"):
            if details.get(name) is not None and details[name] is not KEEP:
                details[name] = self.masker.mask_strings(details[name])
        done = finish(execution, status, **details)
        if done:
            self._notify(execution, status)
        return done

    def _answer_unclaimed(self) -> None:
        """The claim failed: end the message's Queue task so that its workflow does not wait on.

        An attempt that is over (stopped or killed while queued, restarted since, gone) ends it
        with claimed false: the workflow gives its run slot back. An attempt that another
        delivery claimed ends it with claimed true: nothing happens if the claimer did so already;
        if the claimer died between its claim and ending the task, the workflow's Run task now
        watches it, and its heartbeat window records the worker lost.
        """
        message = self.message
        try:
            current = Execution.get(message.job_id, message.execution_id, consistent_read=True,
                                    attributes_to_get=["status", "attempt"])
        except DoesNotExist:
            end_task(self.deps.stepfunctions, message.task_token, queue_output(False))
            return
        if int(current.attempt) != message.attempt or current.status in states.FINAL:
            same = int(current.attempt) == message.attempt
            end_task(self.deps.stepfunctions, message.task_token,
                     queue_output(False, status=current.status if same else None))
        else:
            end_task(self.deps.stepfunctions, message.task_token, queue_output(True, worker="another delivery"))

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
        # Every value sealed for the job (repository password and key, default and host keys) and
        # for this run (keys given at start or restart).
        self.masker.add(list(secrets.values()) + list(run_keys.values()))
        repository = spec["repository"]
        try:
            checkout = Checkout(repository["url"], workspace.project, workspace.scratch, Credentials(
                username=(repository.get("credentials") or {}).get("username"),
                password=secrets.get(SECRET_REPO_PASSWORD), ssh_key=secrets.get(SECRET_REPO_KEY)),
                mask=self.masker, protocols=self.deps.settings.repository_rules.schemes)
            commit = checkout.fetch(repository["branch"], execution.pinned_commit)
            repository_log = self.masker.mask_strings(checkout.repository_log())
            playbook = workspace.playbook(repository["defaultPlaybook"])
            installed = self._install_requirements(workspace, checkout, supervisor)
            run = self._prepare(workspace, execution, spec, secrets, run_keys, playbook, supervisor, installed)
        except (CheckoutError, WorkspaceError, GalaxyError) as exc:
            if self._finish(execution, states.INIT_FAILURE, reason=self.masker(str(exc))):
                return states.INIT_FAILURE
            return self._ended_before_running(execution, supervisor) or states.INIT_FAILURE
        if not mark_running(execution, repository_log, commit):
            return self._ended_before_running(execution, supervisor) or execution.status
        supervisor.run_task.learn(execution.run_token)  # the row as our write left it
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

    def _install_requirements(self, workspace: Workspace, checkout: Checkout, supervisor: Supervisor) -> Installed | None:
        """The checkout's Galaxy requirements, installed into the workspace (runner_lambda/galaxy.py)."""
        installer = GalaxyInstaller(self.deps.galaxy_cache, self.deps.settings.repository_rules, checkout.environment,
                                    checkout.ls_remote, self.masker, run_id=supervisor.run_id,
                                    extra_environment=galaxy_process_environment())
        installed = installer.install(workspace.project, workspace.path / "galaxy")
        if installed is not None:
            logger.info("execution %s attempt %d: galaxy requirements installed in %.2f s (cache: %s)",
                        self.message.execution_id, self.message.attempt, installed.seconds, installed.cache)
        return installed

    def _prepare(self, workspace: Workspace, execution: Execution, spec: dict, secrets: dict[str, str],
                 run_keys: dict[str, str], playbook: str, supervisor: Supervisor,
                 installed: Installed | None = None) -> PlaybookRun:
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
        # The run's options (chalicelib/executions/options.py); its `limit` is already in the
        # target hosts, resolved when the execution started.
        options = json.loads(execution.options) if execution.options else {}
        tags = options["tags"].split(",") if "tags" in options else spec.get("playbookTags") or []
        return PlaybookRun(private_data_dir=str(workspace.path), project_dir=str(workspace.project),
                           playbook=playbook, inventory=workspace.write_inventory(inventory), limit=limit,
                           extravars={**(spec.get("properties") or {}), **options.get("extraVars", {})},
                           tags=[tag for tag in tags if tag],
                           skip_tags=[tag for tag in options.get("skipTags", "").split(",") if tag],
                           check=bool(options.get("checkMode")), diff=bool(options.get("diffMode")),
                           verbosity=int(options.get("verbosity") or 0),
                           run_id=supervisor.run_id, stop_file=str(supervisor.stop_file),
                           environment=playbook_environment(installed, workspace.project))
