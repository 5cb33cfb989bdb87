"""What a run may see, and what it leaves behind: the worker's side of tenant isolation.

A playbook is hostile code running as the worker's user, in an environment that Lambda reuses
for the next run, of any account. So:
- its processes get an environment built from an allowlist, never the worker's own (which holds
  the function's AWS credentials, the runtime API and the service's table and queue names);
- the worker is not dumpable, so its /proc/<pid>/environ and memory are closed to them;
- each run has its own HOME, ANSIBLE_HOME and TMPDIR inside its workspace, and no user site;
- before a run starts and after it ends, every other process of the worker's user is killed and
  /tmp is emptied; if anything survives, the worker exits and the environment is discarded.
The last two apply only where the worker owns its whole environment (Lambda, a Fargate task, or
local mode's sandbox): elsewhere the same user runs everything else on the machine.
"""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import psutil

from runner_lambda.processes import reap

logger = logging.getLogger("runner.worker")
PR_SET_DUMPABLE = 4
SCRATCH = Path("/tmp")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
KILL_ROUNDS = 5


class EnvironmentTainted(Exception):
    """Something of a run survived the cleanup: this environment must not serve another run."""


# What ECS sets in a Fargate task's environment (local mode's Fargate sandbox sets it too).
FARGATE_EXECUTION_ENV = "AWS_ECS_FARGATE"


def owns_environment() -> bool:
    """Whether the worker owns its whole environment (Lambda, a Fargate task, or a local sandbox
    standing in for either), as a non-root user."""
    on_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    on_fargate = os.environ.get("AWS_EXECUTION_ENV") == FARGATE_EXECUTION_ENV
    return (on_lambda or on_fargate) and os.getuid() != 0


def close_worker() -> bool:
    """Make this process non-dumpable: its environment and memory closed to its children."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def run_environment(home: Path, temp: Path, **extra: str) -> dict[str, str]:
    """The whole environment of a run's processes, from nothing: the tools, the run's own places."""
    env = {
        # ansible-playbook and its Python live beside this interpreter.
        "PATH": f"{Path(sys.executable).parent}:{SYSTEM_PATH}",
        "HOME": str(home),
        "TMPDIR": str(temp),
        "ANSIBLE_HOME": str(home / ".ansible"),
        "ANSIBLE_LOCAL_TEMP": str(temp / "ansible"),
        "ANSIBLE_REMOTE_TEMP": "~/.ansible/tmp",
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "TZ": os.environ.get("TZ") or "UTC",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(extra)
    return env


def not_inherited(env: dict[str, str], granted: set[str]) -> dict[str, str]:
    """`env` less what it merely inherited from the worker: the granted keys, and what differs.

    ansible-runner seeds a playbook's environment with a copy of the worker's; what it adds of
    its own (its callback plugin, its artifact paths) differs from the worker's, so it stays.
    """
    own = os.environ
    return {key: value for key, value in env.items()
            if key in granted or key not in own or own[key] != value}


def _ancestors() -> set[int]:
    pids = set()
    try:
        for process in psutil.Process().parents():
            pids.add(process.pid)
    except psutil.Error:
        pass
    return pids


def _strays() -> list[psutil.Process]:
    """Every process of this user that is neither this worker nor one of its ancestors."""
    spared = _ancestors() | {os.getpid()}
    uid = os.getuid()
    found = []
    for process in psutil.process_iter(["uids"]):
        try:
            if process.pid not in spared and process.info["uids"] and process.info["uids"].real == uid:
                found.append(process)
        except psutil.Error:
            continue
    return found


def kill_strays() -> list[int]:
    """Stop, then kill, every other process of this user until none is left; answer survivors."""
    for _ in range(KILL_ROUNDS):
        strays = _strays()
        if not strays:
            return []
        # Stopped first, so that none can fork a replacement while the others are killed.
        for signal_number in (signal.SIGSTOP, signal.SIGKILL):
            for process in strays:
                try:
                    process.send_signal(signal_number)
                except psutil.Error:
                    pass
        psutil.wait_procs(strays, timeout=2)
        reap()
    return [process.pid for process in _strays() if process.status() != psutil.STATUS_ZOMBIE]


def empty_scratch(root: Path = SCRATCH, keep: tuple[str, ...] = ()) -> list[str]:
    """Remove everything of this user in /tmp but the entries named in `keep`; answer what could not be removed.

    Entries of other users are not a run's: it cannot make them (no setuid, no new privileges),
    and in local mode's sandbox they are the read-only paths it binds there. What is kept (the
    Galaxy install cache) is checked by its owner (runner_lambda/galaxy.py InstallCache.prune).
    """
    left = []
    uid = os.getuid()
    for entry in list(root.iterdir()) if root.is_dir() else []:
        try:
            if entry.name in keep or entry.lstat().st_uid != uid:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            left.append(entry.name)
    return left


def reset_environment(keep: tuple[str, ...] = ()) -> None:
    """Leave nothing of one run for the next (but the /tmp entries named in `keep`): raise
    EnvironmentTainted if anything survives."""
    if not owns_environment():
        return
    survivors = kill_strays()
    left = empty_scratch(keep=keep)
    if survivors or left:
        raise EnvironmentTainted(f"survived the cleanup: processes {survivors}, /tmp entries {left}")
