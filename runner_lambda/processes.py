"""Ending every process of a run: ansible's workers start sessions of their own, so killing a
process group is not enough. The worker becomes a child subreaper, so that orphans of the run are
re-parented to it, and kills its whole descendant tree until none is left."""
from __future__ import annotations

import ctypes
import logging
import os
import time

import psutil

logger = logging.getLogger("runner.worker")
PR_SET_CHILD_SUBREAPER = 36
_subreaper = {"on": False}


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (Linux); False where unsupported."""
    if _subreaper["on"]:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper["on"] = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        _subreaper["on"] = False
    return _subreaper["on"]


RUN_MARKER = "RUNNER_RUN_ID"


def _belongs_to(process: psutil.Process, run_id: str) -> bool:
    try:
        return process.environ().get(RUN_MARKER) == run_id
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True  # a descendant we cannot read is one we started; be thorough


def descendants(run_id: str) -> list[psutil.Process]:
    """Every live descendant of this process that carries the run's marker in its environment."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    return [process for process in children if _belongs_to(process, run_id)]


def reap() -> None:
    """Collect the exit status of adopted children that have ended (no zombies left behind).

    Only a subreaper (the worker process) does this: elsewhere, other code owns our children.
    """
    while _subreaper["on"]:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_tree(run_id: str, timeout: float = 5.0) -> int:
    """SIGKILL every process of the run, again until none is left; answer how many were killed."""
    killed = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        victims = descendants(run_id)
        if not victims:
            break
        for process in victims:
            try:
                process.kill()
                killed += 1
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=0.5)
        reap()
    left = descendants(run_id)
    if left:
        logger.error("processes still alive after kill: %s", [process.pid for process in left])
    return killed
