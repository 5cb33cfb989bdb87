"""Local mode's stand-in for Lambda's SQS trigger: a supervised pool of worker processes."""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading

import psutil

from localmode.sandbox import SandboxPlan, worker_environment, wrap

logger = logging.getLogger("runner.local.workers")
DEFAULT_WORKERS = 4
PR_SET_PDEATHSIG = 1


def end_orphaned_runs(live_workers: list[int]) -> int:
    """Kill what a dead worker left running: processes of a run that no live worker supervises.

    On Lambda the whole sandbox goes with the worker; here its playbook would run on, orphaned.
    """
    live = set(live_workers)
    ours = str(os.getpid())  # runs of another local mode on this machine are not ours to end
    ended = 0
    for process in psutil.process_iter():
        try:
            environment = process.environ()
            if "RUNNER_RUN_ID" not in environment or environment.get("RUNNER_PARENT_PID") != ours:
                continue
            if live & {parent.pid for parent in process.parents()}:
                continue
            process.kill()
            ended += 1
        except psutil.Error:
            continue
    if ended:
        logger.warning("ended %d processes left by a lost worker", ended)
    return ended


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when local mode's spawning thread goes away."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def end_process_groups(processes: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM each process's group, then SIGKILL those still there after `timeout` seconds."""
    for process in processes:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


class WorkerPool:
    """N worker processes polling the run queue; one that dies is replaced, as Lambda would."""

    def __init__(self, count: int, environment: dict[str, str], sandbox: SandboxPlan | None = None) -> None:
        self.count = count
        self._environment = environment
        self._sandbox = sandbox
        self._processes: list[subprocess.Popen] = []
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def _spawn(self) -> subprocess.Popen:
        command = [sys.executable, "-m", "localmode.worker_process"]
        environment = {**os.environ, **self._environment, "RUNNER_PARENT_PID": str(os.getpid())}
        if self._sandbox is not None:
            command, environment = wrap(command, self._sandbox), worker_environment(environment)
        # Each worker leads a process group of its own, so that stopping it ends its playbooks too;
        # it dies with local mode (a sandbox's PID 1 takes every process of the sandbox with it).
        return subprocess.Popen(command, env=environment, start_new_session=True, preexec_fn=die_with_parent)

    def start(self) -> None:
        """Start the workers and their supervisor."""
        self._processes = [self._spawn() for _ in range(self.count)]
        self._supervisor.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            replaced = False
            for index, process in enumerate(self._processes):
                if process.poll() is not None and not self._stopping.is_set():
                    logger.warning("worker %d exited with %s; starting a new one", process.pid, process.returncode)
                    self._processes[index] = self._spawn()
                    replaced = True
            if replaced:
                end_orphaned_runs(self.pids())

    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [process.pid for process in self._processes]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every worker and whatever it started."""
        self._stopping.set()
        end_process_groups(self._processes, timeout)
