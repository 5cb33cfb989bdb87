"""`make run`: the emulator, the tables, the bootstrap accounts and the API, in the foreground."""
from __future__ import annotations

import errno
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from chalice.config import Config
from chalice.local import LocalChalice, LocalDevServer, ThreadedHTTPServer

from chalicelib.platform import aws
from chalicelib.platform import models
from chalicelib.platform import wiring as services
from chalicelib.platform.config import get_settings, reset_settings
from localmode.bootstrap import bootstrap_accounts, parse_accounts, previous_passwords
from localmode.emulator import LOCAL_PREFIX, MOTO_ACCOUNT_ID, EmulatorProcess, emulator_environment, new_access_key, tune_gc
from localmode.examples import example_repository
from localmode.gateway import RunnerRequestHandler
from localmode.queue_poller import QueuePoller
from localmode.schedule_tick import LocalScheduler
from localmode.sandbox import SandboxPlan, make_plan, unavailable_reason
from localmode.workers import DEFAULT_WORKERS, WorkerPool
from localmode.fargate_tasks import DEFAULT_FARGATE_WORKERS, FargatePool
from localmode.workflow_events import WorkflowEndWatcher, scheduled_event
from localmode.snapshot import (
    dump_tables, load_tables, read_snapshot, save_snapshot, write_private,
)
from chalicelib.platform.template import load_template

logger = logging.getLogger("runner.local")
SNAPSHOT_EVERY_SECONDS = 30
# The slot reconciler's period (hourly on AWS): a slot a lost release left held comes back within it.
SLOT_RECONCILE_SECONDS = 60


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    value = int(raw)
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
    return value


def recover_executions(settings) -> int:
    """End the executions a stop of local mode caught mid-run (no workflow will ever end them); answers how many.

    Each ends as its workflow ends an attempt whose worker is lost (states.WORKER_LOST: FAILURE, or
    KILLED for a kill in progress), only if it is still in the status and attempt read, and the
    change is noticed to its callbacks as the workflow's would be.
    """
    from pynamodb.exceptions import UpdateError

    from chalicelib.callbacks.notices import Notifier
    from chalicelib.executions import states
    from chalicelib.jobs.service import now_ms
    from chalicelib.platform.models import Execution, RunSlot
    from chalicelib.platform.storage import condition_failed

    notifier = Notifier(aws.client("sqs"), settings.callback_queue_url)
    recovered = 0
    for execution in Execution.scan(Execution.status.is_in(*states.ACTIVE)):
        status, attempt = execution.status, int(execution.attempt)
        target = states.WORKER_LOST[status]
        actions = [Execution.status.set(target), Execution.run_token.remove(), Execution.updated_time.set(now_ms())]
        if target == states.FAILURE:  # a KILLED one keeps who killed it, as the workflow's RecordKillUnconfirmed does
            actions.append(Execution.status_reason.set("worker lost: local mode stopped while it ran"))
        try:
            execution.update(actions=actions, condition=(Execution.status == status) & (Execution.attempt == attempt))
        except UpdateError as exc:
            if not condition_failed(exc):
                logger.error("could not end execution %s (%s, attempt %d)", execution.execution_id, status, attempt)
                raise
            logger.info("execution %s left %s attempt %d meanwhile; not recovered", execution.execution_id,
                        status, attempt)
            continue
        notifier.status_changed(execution, target)
        recovered += 1
    # No workflow holds a run slot or waits for one any more.
    for entry in RunSlot.scan():
        entry.delete()
    return recovered


def _optional_port(name: str) -> int | None:
    raw = os.environ.get(name)
    return int(raw) if raw else None


class QuietThreadedHTTPServer(ThreadedHTTPServer):
    """Chalice's threaded server, minus tracebacks on stderr when a client hangs up early."""

    # Python's default backlog of 5 resets connections when many clients arrive at once.
    request_queue_size = 128

    def handle_error(self, request: object, client_address: tuple) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            logger.debug("client %s went away: %s", client_address, error)
            return
        logger.error("error serving %s: %r", client_address, error)


class PortTaken(Exception):
    """The API port is in use."""


class LocalRunner:
    """Everything `make run` starts, and stops again in reverse order."""

    def __init__(self, state_dir: Path, host: str, port: int, accounts: list[str]) -> None:
        self.state_dir = state_dir
        self.host = host
        self.port = port
        self.accounts = accounts
        self.emulator: EmulatorProcess | None = None
        self.workers: WorkerPool | None = None
        self.fargate: FargatePool | None = None
        self.scheduler: LocalScheduler | None = None
        self.callbacks: QueuePoller | None = None
        self.handoffs: QueuePoller | None = None
        self.slots: QueuePoller | None = None
        self.workflow_events: WorkflowEndWatcher | None = None
        self.retries: QueuePoller | None = None
        self.server: LocalDevServer | None = None
        self.emulator_state = None
        self.local_json: dict = {}
        self._stop = threading.Event()
        self._snapshot_lock = threading.Lock()

    def _bind_api(self) -> None:
        from app import app

        app.__class__ = LocalChalice  # thread-local current_request, as `chalice local` does
        try:
            self.server = LocalDevServer(app, Config(), self.host, self.port,
                                         handler_cls=RunnerRequestHandler, server_cls=QuietThreadedHTTPServer)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortTaken(f"port {self.port} on {self.host} is already in use: stop what runs there, "
                                f"or choose another port with RUNNER_PORT=<port>") from None
            raise

    def start(self) -> dict:
        """Start everything; answer the content of local.json."""
        self._bind_api()  # first: a taken port must fail before anything else starts
        template = load_template()
        self.emulator = EmulatorProcess(port=_optional_port("RUNNER_EMULATOR_PORT"),
                                        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        environment = emulator_environment(self.emulator.endpoint, self.emulator.region,
                                           LOCAL_PREFIX, template, new_access_key())
        os.environ.update(environment)
        os.environ["RUNNER_PORT"] = str(self.port)  # with the emulator's, a port no callback may reach
        reset_settings()
        aws.reset_clients()
        models.unbind()
        services.reset()
        saved = read_snapshot(self.state_dir)
        self.emulator_state = self.emulator.start(environment, saved[0] if saved else None)
        os.environ["RUNNER_KMS_KEY_ID"] = self.emulator_state.kms_key_id
        reset_settings()
        services.reset()
        settings = get_settings()
        if saved:
            restored = load_tables(self.emulator.client("dynamodb"), settings.tables, saved[1])
            logger.info("restored %d items from %s", restored, self.state_dir)
        models.bind(settings)
        recover_executions(settings)
        local_json_path = self.state_dir / "local.json"
        # The token signing key: created at the first start, read from the restored tables after.
        entries = bootstrap_accounts(self.accounts, services.signing_key().get(),
                                     settings.token_ttl_seconds, previous_passwords(local_json_path))
        base_url = f"http://{self.host}:{self.port}"
        self.local_json = {"baseUrl": base_url, **entries[0], "accounts": entries,
                           "exampleRepository": example_repository(self.state_dir)}
        write_private(local_json_path, json.dumps(self.local_json, indent=2) + "\n")
        environment = {name: value for name, value in os.environ.items()
                       if name.startswith(("AWS_", "RUNNER_")) and name not in ("RUNNER_PORT",)}
        write_private(self.state_dir / "emulator.json",
                      json.dumps({"endpoint": self.emulator.endpoint, "environment": environment}, indent=2))
        self.snapshot()
        threading.Thread(target=self._snapshot_loop, name="snapshot", daemon=True).start()
        self._start_handoffs(settings)
        self._start_slots(settings)
        worker_environment = {name: value for name, value in os.environ.items() if name.startswith(("AWS_", "RUNNER_"))}
        sandbox = self._sandbox_plan()
        self.workers = WorkerPool(_positive_int("RUNNER_LOCAL_WORKERS", DEFAULT_WORKERS), worker_environment, sandbox)
        self.workers.start()
        # Runs whose TTL does not fit in a Lambda invocation: a fresh sandbox per run, as a Fargate task.
        self.fargate = FargatePool(aws.client("sqs"), settings.fargate_queue_url,
                                   _positive_int("RUNNER_LOCAL_FARGATE_WORKERS", DEFAULT_FARGATE_WORKERS),
                                   worker_environment, sandbox)
        self.fargate.start()
        self._start_scheduler(settings)
        self._start_callbacks(settings)
        self._start_retries(settings)
        tune_gc()
        return self.local_json

    def _sandbox_plan(self) -> SandboxPlan | None:
        """Workers run in Lambda-faithful sandboxes wherever this machine allows; else say why."""
        reason = unavailable_reason()
        if reason:
            print(f"runner: {reason}", file=sys.stderr, flush=True)
            return None
        return make_plan(self.state_dir)

    def _start_scheduler(self, settings) -> None:
        """Schedules live in the tables; the emulator's Scheduler starts empty: fill it, then fire it."""
        from app import schedule_trigger

        outcome = services.schedule_service().reconcile()
        if outcome["applied"]:
            logger.info("restored %d schedules (%d missed while stopped)", outcome["applied"], outcome["missed"])
        self.scheduler = LocalScheduler(aws.client("scheduler"), settings.schedule_group,
                                        settings.trigger_function_arn, lambda event: schedule_trigger(event, None))
        self.scheduler.start()

    def _start_callbacks(self, settings) -> None:
        """The callback sender, fed by the callback queue as Lambda would feed it."""
        from app import callback_sender

        self.callbacks = QueuePoller(aws.client("sqs"), settings.callback_queue_url, callback_sender, settings.region,
                                     threads=8, batch_size=4, function="callback_sender")
        self.callbacks.start()

    def _start_handoffs(self, settings) -> None:
        """The run handoff, fed by the handoff queue as Lambda would feed it.

        Pollers of its own, never the workers': a handoff must arrive while every worker is busy
        running, since the Run task's heartbeat window is already open.
        """
        from app import run_handoff

        self.handoffs = QueuePoller(aws.client("sqs"), settings.handoff_queue_url, run_handoff, settings.region,
                                    threads=2, batch_size=4)
        self.handoffs.start()

    def _start_slots(self, settings) -> None:
        """The slot keeper fed by the slot queue, the slot release fed by workflow ends, the slot reconciler on a timer."""
        from app import slot_keeper, slot_reconciler, slot_release
        from chalicelib.executions.slots import UNFINISHED

        # One poller: moto's FIFO receive decides which message groups are busy when it begins, so
        # a second receive waiting alongside would skip an account's messages for its whole wait
        # after the first had finished with them. (Lambda polls a FIFO queue with several pollers
        # and never hands one group to two at once.)
        self.slots = QueuePoller(aws.client("sqs"), settings.slot_queue_url, slot_keeper, settings.region,
                                 threads=1, batch_size=10, function="slot_keeper")
        self.slots.start()
        self.workflow_events = WorkflowEndWatcher(aws.client("stepfunctions"), settings.execution_state_machine_arn,
                                                  slot_release, UNFINISHED, interval=1.0)
        self.workflow_events.start()
        every = _positive_int("RUNNER_SLOT_RECONCILE_SECONDS", SLOT_RECONCILE_SECONDS)
        threading.Thread(target=self._every, args=(every, lambda: slot_reconciler(scheduled_event(settings.region, MOTO_ACCOUNT_ID), None), "slot reconciler"),
                         name="slot-reconciler", daemon=True).start()

    def _every(self, seconds: int, action, name: str) -> None:
        while not self._stop.wait(seconds):
            try:
                action()
            except Exception:  # noqa: BLE001 - one failed round must not end the service
                logger.exception("%s failed", name)


    def _start_retries(self, settings) -> None:
        """Automatic retries, fed by the retry queue as Lambda would feed them."""
        from app import execution_retry

        self.retries = QueuePoller(aws.client("sqs"), settings.retry_queue_url, execution_retry, settings.region,
                                   threads=1, batch_size=4, function="execution_retry")
        self.retries.start()

    def _snapshot_loop(self) -> None:
        while not self._stop.wait(SNAPSHOT_EVERY_SECONDS):
            try:
                self.snapshot()
            except Exception:  # noqa: BLE001 - a failed periodic save must not end the service
                logger.exception("periodic snapshot failed")

    def snapshot(self) -> Path:
        """Save the tables and the emulator's keys to the state directory."""
        with self._snapshot_lock:
            tables = dump_tables(self.emulator.client("dynamodb"), get_settings().tables)
            return save_snapshot(self.state_dir, self.emulator_state, tables)

    def serve(self) -> None:
        """Serve the API until interrupted."""
        self.server.server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Save state and stop everything (the API first, so no write is lost)."""
        # A second Ctrl-C must not cut the save short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self._stop.set()
        if self.server is not None:
            self.server.server.server_close()
        if self.scheduler is not None:
            self.scheduler.stop()
        # Every poller stops asking at once; each then ends the receive it is waiting in.
        for poller in (self.callbacks, self.handoffs, self.slots, self.retries):
            if poller is not None:
                poller.request_stop()
        if self.callbacks is not None:
            self.callbacks.stop()
        if self.handoffs is not None:
            self.handoffs.stop()
        if self.workflow_events is not None:
            self.workflow_events.stop()
        if self.slots is not None:
            self.slots.stop()
        if self.retries is not None:
            self.retries.stop()
        if self.workers is not None:
            self.workers.stop()
        if self.fargate is not None:
            self.fargate.stop()
        if self.emulator is not None and self.emulator_state is not None:
            path = self.snapshot()
            print(f"runner: state saved to {path}", flush=True)
        if self.emulator is not None:
            self.emulator.stop()
            (self.state_dir / "emulator.json").unlink(missing_ok=True)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """Run local mode in the foreground; Ctrl-C (or SIGTERM) stops it cleanly."""
    logging.basicConfig(level=os.environ.get("RUNNER_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the emulator's access log
    state_dir = Path(os.environ.get("RUNNER_STATE_DIR", ".runner")).resolve()
    try:
        port = int(os.environ.get("RUNNER_PORT", "8000"))
        accounts = parse_accounts(os.environ.get("RUNNER_LOCAL_ACCOUNTS"))
    except ValueError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return 2
    runner = LocalRunner(state_dir, os.environ.get("RUNNER_HOST", "127.0.0.1"), port, accounts)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        local = runner.start()
    except PortTaken as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        runner.stop()
        return 130
    print(f"Runner is up on {local['baseUrl']}  (emulator on {runner.emulator.endpoint})")
    for entry in local["accounts"]:
        print(f"  account {entry['accountAlias']}: username {entry['username']}  password {entry['password']}")
    print(f"  bearer token of {local['accountAlias']}: {local['bearerToken']}")
    print(f"  example playbooks (branch main): {local['exampleRepository']}")
    print(f"  credentials and tokens: {state_dir / 'local.json'}   (Ctrl-C stops)", flush=True)
    try:
        runner.serve()
    except KeyboardInterrupt:
        pass
    finally:
        print("runner: stopping", flush=True)
        runner.stop()
    return 0
