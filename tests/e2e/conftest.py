"""End-to-end fixtures: local mode (`python -m localmode`) as a real subprocess, spoken to over HTTP.

`LocalMode` starts one instance in a state directory of its own on a free port and waits until it
serves; `service` is one shared instance (accounts DEMO and OTHER) per test process;
`start_local_mode` makes function-scoped instances for the tests that restart or stop one.
Every process started here is killed at teardown, whatever the test did. `LocalMode.aws` and the
methods after it look at the emulator behind an instance, for signals the API does not show (a
workflow that ended, a drained queue).
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
# Deadlines for a loaded 2-core machine: they turn a hang into a failure, they measure nothing.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
# Variables of the caller's environment that would point local mode elsewhere than we say.
_FOREIGN_ENV_PREFIXES = ("RUNNER_", "AWS_", "MOTO_", "TEST_SERVER_MODE")

# Most tests exercise the Lambda-like workers (their warm reuse, the sandbox, a lost worker) with
# jobs that set no executionTtl, whose default of 180 minutes would send them to Fargate: a
# ceiling above it keeps them there. tests/e2e/test_fargate_runs.py sets its own to show the routing.
LAMBDA_CEILING_FOR_TESTS = str(181 * 60 + 60)

_live: set["LocalMode"] = set()


def _private(path: Path):
    """A file opened for writing, readable by its owner only."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_session(token: str | None = None) -> requests.Session:
    """A requests session that ignores proxy settings and sends `token` as a bearer token."""
    session = requests.Session()
    session.trust_env = False  # loopback only: no HTTP(S)_PROXY detour
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


@dataclass
class Stopped:
    """How a local mode process ended."""

    returncode: int | None
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class LocalMode:
    """One `python -m localmode` process with its own state directory and port."""

    def __init__(self, state_dir: Path, log_dir: Path, port: int | None = None,
                 accounts: str | None = None, env: dict[str, str] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.log_dir = Path(log_dir)
        self.fixed_port = port
        self.port: int | None = None
        self.accounts = accounts
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.local: dict = {}
        self._run = 0
        self._stdout_path: Path | None = None
        self._stderr_path: Path | None = None
        self._aws_clients: dict[tuple[str, str], Any] = {}

    # -- process ---------------------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items()
               if not name.startswith(_FOREIGN_ENV_PREFIXES)}
        env.update({"RUNNER_STATE_DIR": str(self.state_dir), "RUNNER_PORT": str(self.port),
                    "PYTHONUNBUFFERED": "1", "RUNNER_LAMBDA_TIMEOUT_SECONDS": LAMBDA_CEILING_FOR_TESTS})
        if self.accounts is not None:
            env["RUNNER_LOCAL_ACCOUNTS"] = self.accounts
        env.update(self.extra_env)
        return env

    def launch(self) -> "LocalMode":
        """Start the process and return at once (see `wait_ready`, `wait_exit`)."""
        if self.running:
            raise RuntimeError("this local mode is already running")
        self.port = self.fixed_port or free_port()
        self._run += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._stdout_path = self.log_dir / f"run{self._run}.stdout"
        self._stderr_path = self.log_dir / f"run{self._run}.stderr"
        # Local mode prints every account's password: its output is for this user's eyes only
        # (the sandboxed workers see the host's files read-only, as another user).
        with _private(self._stdout_path) as out, _private(self._stderr_path) as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "localmode"], cwd=REPO_ROOT, env=self._environment(),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,  # its own process group: killed as one at teardown
            )
        _live.add(self)
        return self

    def start(self, timeout: float = START_TIMEOUT) -> "LocalMode":
        """Start and wait until /health answers 200 and local.json describes this instance.

        A port chosen here that someone else took in the meantime is retried on another port.
        """
        for attempt in range(3):
            self.launch()
            try:
                return self.wait_ready(timeout)
            except PortRace:
                if self.fixed_port is not None or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "LocalMode":
        deadline = time.monotonic() + timeout
        session = http_session()
        local_json = self.state_dir / "local.json"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                ended = self._collect()
                if ended.returncode == 1 and "already in use" in ended.stderr and self.fixed_port is None:
                    raise PortRace(ended.stderr)
                raise RuntimeError(f"local mode ended before it served (exit {ended.returncode}):\n"
                                   f"{ended.output}")
            try:
                healthy = session.get(f"{self.base_url}/health", timeout=2).status_code == 200
            except requests.RequestException:
                healthy = False
            if healthy:
                try:
                    document = json.loads(local_json.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    document = None
                if isinstance(document, dict) and document.get("baseUrl") == self.base_url:
                    self.local = document
                    return self
            time.sleep(0.1)  # paces the polling of /health and local.json
        self.kill()
        raise RuntimeError(f"local mode did not serve within {timeout} s:\n{self._collect().output}")

    def wait_exit(self, timeout: float) -> Stopped:
        """Wait for the process to end by itself (killed after `timeout`, returncode None)."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return Stopped(None, *self._read_output())
        return self._collect()

    def stop(self, sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> Stopped:
        """Send `sig` (Ctrl-C by default) and wait up to `timeout`; returncode None if it hung."""
        if self.process is None:
            raise RuntimeError("never started")
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """End the process and anything it started, now (teardown)."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                process.kill()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        _live.discard(self)

    def _collect(self) -> Stopped:
        _live.discard(self)
        return Stopped(self.process.returncode, *self._read_output())

    def _read_output(self) -> tuple[str, str]:
        def read(path: Path | None) -> str:
            try:
                return path.read_text(encoding="utf-8", errors="replace") if path else ""
            except OSError:
                return ""
        return read(self._stdout_path), read(self._stderr_path)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- HTTP -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def account(self, alias: str) -> dict:
        """local.json's entry of an account."""
        for entry in self.local.get("accounts", []):
            if entry.get("accountAlias") == alias:
                return entry
        raise KeyError(f"local.json has no account {alias}")

    def client(self, alias: str | None = None, token: str | None = None) -> "Client":
        """A client with the bearer token of `alias` (from local.json), of `token`, or without one."""
        if alias is not None:
            token = self.account(alias)["bearerToken"]
        return Client(self.base_url, token)

    # -- the emulator -------------------------------------------------------------------------
    def emulator_environment(self) -> dict[str, str]:
        """The environment local mode gives its functions: endpoint, region, queue URLs, state machine ARNs."""
        return json.loads((self.state_dir / "emulator.json").read_text(encoding="utf-8"))["environment"]

    def aws(self, service: str) -> Any:
        """A boto3 client of the emulator behind this instance (made once per emulator: tests poll with it)."""
        environment = self.emulator_environment()
        key = (service, environment["AWS_ENDPOINT_URL"])
        if key not in self._aws_clients:
            self._aws_clients[key] = boto3.client(
                service, region_name=environment["AWS_REGION"], endpoint_url=environment["AWS_ENDPOINT_URL"],
                aws_access_key_id=environment["AWS_ACCESS_KEY_ID"], aws_secret_access_key="local")
        return self._aws_clients[key]

    def workflow(self, execution_id: str, attempt: int = 1) -> dict:
        """Step Functions' description of the execution workflow of an attempt (`status`: RUNNING, SUCCEEDED...)."""
        machine = self.emulator_environment()["RUNNER_EXECUTION_STATE_MACHINE_ARN"]
        arn = machine.replace(":stateMachine:", ":execution:", 1) + f":{execution_id}-{attempt}"
        return self.aws("stepfunctions").describe_execution(executionArn=arn)

    def workflow_ended(self, execution_id: str, attempt: int = 1) -> bool:
        """Whether the execution workflow of the attempt has ended: nothing of it can happen any more."""
        return self.workflow(execution_id, attempt)["status"] != "RUNNING"

    def workflow_states(self, execution_id: str, attempt: int = 1) -> list[str]:
        """The states the execution workflow of the attempt has entered so far, in order."""
        arn = self.workflow(execution_id, attempt)["executionArn"]
        history = self.aws("stepfunctions").get_execution_history(executionArn=arn)
        return [event["stateEnteredEventDetails"]["name"] for event in history["events"]
                if "stateEnteredEventDetails" in event]

    def waiting_for_slot(self, execution_id: str, attempt: int = 1) -> bool:
        """Whether the attempt is on its account's waiting list: the slot keeper took it in and granted nothing yet."""
        item = self.aws("dynamodb").get_item(
            TableName=self.emulator_environment()["RUNNER_SLOTS_TABLE"], ConsistentRead=True,
            Key={"accountAlias": {"S": self._account_of(execution_id)}, "entry": {"S": f"ticket#{execution_id}#{attempt}"}})
        return "Item" in item

    def _account_of(self, execution_id: str) -> str:
        return json.loads(self.workflow(execution_id)["input"])["accountAlias"]

    def queue_drained(self, variable: str) -> bool:
        """Whether the queue named by environment `variable` holds no message: none waiting, in flight or delayed."""
        attributes = self.aws("sqs").get_queue_attributes(QueueUrl=self.emulator_environment()[variable],
                                                          AttributeNames=["All"])["Attributes"]
        return all(attributes[name] == "0" for name in ("ApproximateNumberOfMessages",
                                                        "ApproximateNumberOfMessagesNotVisible",
                                                        "ApproximateNumberOfMessagesDelayed"))


class PortRace(RuntimeError):
    """The free port we picked was taken before local mode bound it."""


class Client:
    """A thin requests wrapper: paths relative to the service, JSON bodies, a fixed bearer token."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.token = token
        self.session = http_session(token)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.base_url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)


def _kill_leftovers() -> None:
    for instance in list(_live):
        instance.kill()


atexit.register(_kill_leftovers)  # last resort, e.g. after an interrupted run


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory):
    """One local mode with accounts DEMO and OTHER, shared by the tests of this test process."""
    yield from running_local_mode(tmp_path_factory, "service", accounts="DEMO,OTHER")


def running_local_mode(tmp_path_factory: pytest.TempPathFactory, name: str, accounts: str = "DEMO",
                       env: dict[str, str] | None = None) -> Iterator[LocalMode]:
    """A local mode of its own for a fixture (`yield from`): started, handed over, killed after."""
    base = tmp_path_factory.mktemp(name)
    instance = LocalMode(base / "state", base / "logs", accounts=accounts, env=env)
    try:
        instance.start()
        yield instance
    finally:
        instance.kill()


@pytest.fixture
def start_local_mode(tmp_path: Path) -> Callable[..., LocalMode]:
    """Make (not start) local modes of this test: `start_local_mode(state_dir=..., port=..., accounts=...)`.

    A state directory given again is reused (a restart); each instance is killed at teardown.
    """
    made: list[LocalMode] = []

    def make(state_dir: Path | None = None, port: int | None = None, accounts: str | None = None,
             env: dict[str, str] | None = None) -> LocalMode:
        index = len(made)
        instance = LocalMode(state_dir or tmp_path / f"state{index}", tmp_path / f"logs{index}",
                             port=port, accounts=accounts, env=env)
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.kill()


def assert_error(response: requests.Response, status: int, field: str | None = None) -> dict:
    """The response is `status` with our JSON error body ({code, message[, field]}); answers the body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    if field is not None:
        assert body.get("field") == field, body
    return body
