"""Running one playbook with ansible-runner, streaming its events."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ansible_runner.interface

from runner_lambda.isolation import not_inherited, run_environment
from runner_lambda.pipe_spawn import use_pipes

STAT_NAMES = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable", "skipped": "skipped"}


@dataclass
class PlaybookRun:
    """What to run: paths inside the workspace, and the job's variables and tags."""

    private_data_dir: str
    project_dir: str
    playbook: str
    inventory: str
    limit: str | None = None
    extravars: dict = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    skip_tags: list[str] = field(default_factory=list)
    check: bool = False  # --check
    diff: bool = False  # --diff
    verbosity: int = 0  # -v ... -vvvv
    run_id: str = ""
    stop_file: str = ""
    # The run's own HOME and TMPDIR (inside its private_data_dir unless given).
    home: str = ""
    temp: str = ""
    # More variables for ansible (where Galaxy requirements were installed).
    environment: dict[str, str] = field(default_factory=dict)


@dataclass
class PlaybookResult:
    """How the run ended: ansible-runner's status and rc, and the per-host stats."""

    status: str
    rc: int | None
    stats: dict
    failed_hosts: list[str]

    @property
    def succeeded(self) -> bool:
        return self.status == "successful" and self.rc == 0


def per_host_stats(stats: dict | None) -> dict[str, dict[str, int]]:
    """ansible's stats as host -> {ok, changed, failed, unreachable, skipped}."""
    hosts: dict[str, dict[str, int]] = {}
    for key, name in STAT_NAMES.items():
        for host, count in ((stats or {}).get(key) or {}).items():
            hosts.setdefault(host, {value: 0 for value in STAT_NAMES.values()})[name] = int(count)
    for host in ((stats or {}).get("processed") or {}):
        hosts.setdefault(host, {value: 0 for value in STAT_NAMES.values()})
    return hosts


PLUGINS = Path(__file__).resolve().parent / "ansible_plugins"
# On PYTHONPATH of ansible's processes: multiprocessing on pipes where /dev/shm is missing.
SHM_FREE = Path(__file__).resolve().parent / "shm_free"


def _environment(run: "PlaybookRun") -> dict[str, str]:
    """The run's whole environment (isolation.run_environment), plus how ansible must behave."""
    private_data_dir = Path(run.private_data_dir)
    return run_environment(
        home=Path(run.home or private_data_dir / "home"), temp=Path(run.temp or private_data_dir / "tmp"),
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        # No SSH connection outlives or is shared beyond its run, and only the run's own keys
        # are offered: never the worker's agent or default identities.
        ANSIBLE_SSH_ARGS="-o ControlMaster=no -o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null",
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(private_data_dir / "cp"),
        # Graceful stop: the linear strategy, checking the stop file before every task.
        ANSIBLE_STRATEGY_PLUGINS=str(PLUGINS / "strategy"),
        ANSIBLE_STRATEGY="runner_linear",
        RUNNER_STOP_FILE=run.stop_file,
        # Every process of the run carries this mark, so that a kill finds them all.
        RUNNER_RUN_ID=run.run_id,
        # Multiprocessing on pipes where /dev/shm is missing (Lambda).
        PYTHONPATH=str(SHM_FREE),
        **run.environment,
    )


def galaxy_process_environment() -> dict[str, str]:
    """What ansible-galaxy needs beyond the run's environment: multiprocessing on pipes, as ansible's."""
    return {"PYTHONPATH": str(SHM_FREE)}


def run_playbook(run: PlaybookRun, on_event: Callable[[dict], None],
                 should_cancel: Callable[[], bool]) -> PlaybookResult:
    """Run the playbook to its end (or until `should_cancel` says so)."""

    environment = _environment(run)
    for place in (environment["HOME"], environment["TMPDIR"]):
        Path(place).mkdir(mode=0o700, parents=True, exist_ok=True)
    use_pipes()
    final_stats: dict = {}

    def handle(event: dict) -> bool:
        if event.get("event") == "playbook_on_stats":
            final_stats.update(event.get("event_data") or {})
        on_event(event)
        return False  # the event is recorded by us; ansible-runner need not keep it on disk

    runner = ansible_runner.interface.init_runner(
        private_data_dir=run.private_data_dir,
        project_dir=run.project_dir,
        playbook=run.playbook,
        inventory=run.inventory,
        limit=run.limit,
        extravars=run.extravars or None,
        tags=",".join(run.tags) if run.tags else None,
        skip_tags=",".join(run.skip_tags) if run.skip_tags else None,
        verbosity=run.verbosity or None,
        # Only fixed flags go here: ansible-runner splits this string into arguments.
        cmdline=" ".join(flag for flag, wanted in (("--check", run.check), ("--diff", run.diff)) if wanted) or None,
        envvars=environment,
        event_handler=handle,
        cancel_callback=should_cancel,
        settings={"pexpect_timeout": 0.2, "suppress_ansible_output": True},
        quiet=True,
        ident="run",
    )
    # ansible-runner seeds the environment with a copy of the worker's, and writes it whole to
    # artifacts/run/command, which the playbook can read: keep only what was set for the run.
    runner.config.env = not_inherited(runner.config.env, set(environment))
    runner.run()
    # runner.stats reads the events from disk, which the handler above keeps from being written.
    stats = final_stats
    failed = set((stats.get("failures") or {})) | set((stats.get("dark") or {}))
    return PlaybookResult(status=runner.status, rc=runner.rc, stats=per_host_stats(stats),
                          failed_hosts=sorted(failed))
