"""What the benchmarks share: local mode in a subprocess, an HTTP client, deadlines, figures, repositories.

Not a benchmark itself: bench/api.py, bench/overhead.py, bench/callback_latency.py and
bench/schedule_lateness.py import it (a script's own directory comes first on sys.path, so
`import common` finds this file when they run as `.venv/bin/python bench/<name>.py`).

- `LocalMode`: `python -m localmode` started in a fresh state directory on a free port, ready once
  GET /health answers and local.json names it, stopped with SIGINT (then killed) at the end.
- `Client`: base URL + bearer token, JSON in and out, `ApiError` naming the request on non-2xx.
- `Deadline` / `wait_for`: every waiting loop of a benchmark ends, with `DeadlineMissed` saying what.
- `percentile` / `summarize` / `print_summary`: the one percentile definition and summary line.
- `scratch_directory` / `make_repository` / `clone_repository`: a real git repository of
  playbooks for file:// URLs, where local mode's sandboxed workers can read it.
- `run_benchmark` / `guarded` / `on_local_mode`: a benchmark's main, with one meaning per exit code.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, Mapping, TextIO, TypeVar

import requests

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
# An execution in one of these will not change any more (chalicelib/executions/states.py FINAL).
FINAL_STATUSES = frozenset({"SUCCESS", "FAILURE", "INIT_FAILURE", "STOPPED", "KILLED"})

T = TypeVar("T")
R = TypeVar("R")


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds only the figures (and --json stays parseable)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def now_ms() -> float:
    """The epoch clock in ms: the one local mode writes its record times with (same host)."""
    return time.time() * 1000.0


# --------------------------------------------------------------------------- deadlines


class WebhookReceiver:
    """A webhook on loopback: answers 200 to every POST and counts them per `executionId`."""

    def __init__(self) -> None:
        from collections import Counter
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.deliveries: Counter = Counter()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    execution = json.loads(raw).get("executionId")
                except (ValueError, AttributeError):
                    execution = None
                with owner._lock:
                    owner.deliveries[execution] += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self.deliveries.values())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "WebhookReceiver":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

class DeadlineMissed(TimeoutError):
    """Something a benchmark waited for did not happen in time."""


class Deadline:
    """A point in time (monotonic clock) by which `what` must be done."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (0 once passed)."""
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self.at

    def check(self, detail: str = "") -> None:
        """Raise DeadlineMissed if the deadline has passed."""
        if self.expired:
            suffix = f" ({detail})" if detail else ""
            raise DeadlineMissed(f"{self.what}: not done within {self.seconds:.3g} s{suffix}")


def wait_for(condition: Callable[[], T | None], seconds: float, what: str, interval: float = 0.2) -> T:
    """Poll `condition` until it answers something truthy (answered); DeadlineMissed after `seconds`."""
    deadline = Deadline(seconds, what)
    while True:
        result = condition()
        if result:
            return result
        deadline.check()
        time.sleep(min(interval, max(0.01, deadline.remaining())))


# --------------------------------------------------------------------------- figures

def percentile(values: Iterable[float], pct: float) -> float:
    """The `pct` percentile (0-100) by linear interpolation between the closest ranks.

    The same definition as numpy's default and statistics.quantiles(method="inclusive"): rank
    (n - 1) * pct / 100 in the sorted values, interpolated; so percentile(v, 50) is the median,
    percentile(v, 100) the maximum. NaN for no values.
    """
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float | None]) -> float | None:
    """percentile(values, 50) of the values that are not None; None when there are none."""
    present = [value for value in values if value is not None]
    return percentile(present, 50) if present else None


@dataclass(frozen=True)
class Summary:
    """Count, median, p95, p99, min and max of some measurements (percentile's definition)."""

    count: int
    median: float
    p95: float
    p99: float
    min: float
    max: float

    def as_dict(self, unit: str = "ms", digits: int | None = 0) -> dict[str, float | int]:
        """{"count", "median_<unit>", "p95_<unit>", "p99_<unit>", "max_<unit>"}, rounded to `digits`."""
        def rounded(value: float) -> float | int:
            if digits is None:
                return value
            return round(value) if digits == 0 else round(value, digits)  # whole ms print as ints
        return {"count": self.count, f"median_{unit}": rounded(self.median), f"p95_{unit}": rounded(self.p95),
                f"p99_{unit}": rounded(self.p99), f"max_{unit}": rounded(self.max)}


def summarize(values: Iterable[float]) -> Summary | None:
    """The Summary of `values`; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    return Summary(len(ordered), percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99),
                   ordered[0], ordered[-1])


def format_summary(label: str, summary: Summary | None, unit: str = "ms", digits: int = 0) -> str:
    """One line: label, count, median, p95, p99 and max."""
    if summary is None:
        return f"{label}: no measurements"
    def shown(value: float) -> str:
        return f"{value:.{digits}f} {unit}"
    return (f"{label}: {summary.count} measured, median {shown(summary.median)}, p95 {shown(summary.p95)}, "
            f"p99 {shown(summary.p99)}, max {shown(summary.max)}")


def print_summary(label: str, summary: Summary | None, unit: str = "ms", digits: int = 0,
                  out: TextIO | None = None) -> None:
    """Print format_summary's line (to stdout by default)."""
    print(format_summary(label, summary, unit, digits), file=out or sys.stdout)


def event_epoch_ms(created: str | None) -> float | None:
    """An ansible-runner event's `created` as epoch ms; ansible-runner writes naive UTC, so no zone = UTC."""
    if not created:
        return None
    try:
        moment = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp() * 1000.0


# --------------------------------------------------------------------------- HTTP

class ApiError(RuntimeError):
    """A request got no answer (status 0) or an answer other than the one expected."""

    def __init__(self, method: str, path: str, status: int, detail: str,
                 response: requests.Response | None = None) -> None:
        super().__init__(f"{method} {path} -> {status or 'no answer'}: {detail}")
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        self.response = response


class Client:
    """The Runner API at `base_url` with a bearer token: JSON bodies, one keep-alive session per thread."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.requests = 0  # sent, whatever came of them
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def session(self) -> requests.Session:
        """This thread's session (requests.Session is not safe to share between threads)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # a proxy from the environment would be part of what is measured
            session.headers["Accept"] = "application/json"
            if self.token:
                session.headers["Authorization"] = f"Bearer {self.token}"
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def request(self, method: str, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None,
                expect: int | None = None) -> requests.Response:
        """Send one request; ApiError when no answer comes, or it is not 2xx, or not `expect`."""
        with self._lock:
            self.requests += 1
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            answer = self.session().request(method, self.base_url + path, params=params, headers=headers,
                                            data=json.dumps(body) if body is not None else None,
                                            timeout=self.timeout)
        except requests.RequestException as exc:
            raise ApiError(method, path, 0, f"{type(exc).__name__}: {exc}") from None
        if not 200 <= answer.status_code < 300 or (expect is not None and answer.status_code != expect):
            wanted = f"expected {expect}" if expect is not None else "expected 2xx"
            raise ApiError(method, path, answer.status_code, f"({wanted}) {answer.text[:300]}", answer)
        return answer

    def call(self, method: str, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None,
             expect: int | None = None) -> Any:
        """request(), answering the JSON body (None for an empty one, e.g. 204)."""
        answer = self.request(method, path, body, params=params, expect=expect)
        if not answer.content:
            return None
        try:
            return answer.json()
        except ValueError:
            raise ApiError(method, path, answer.status_code, f"not JSON: {answer.text[:300]}", answer) from None

    def collect(self, path: str, size: int = 100, seconds: float = 60.0) -> list[dict]:
        """Every `results` item of a paged list route (page=0, 1, ... until totalSize), within `seconds`."""
        deadline = Deadline(seconds, f"GET {path} (all pages)")
        results: list[dict] = []
        page = 0
        while True:
            answer = self.call("GET", path, params={"page": page, "size": size}, expect=200)
            results += answer["results"]
            if len(results) >= answer["totalSize"] or not answer["results"]:
                return results
            deadline.check(f"{len(results)} of {answer['totalSize']} read")
            page += 1

    def close(self) -> None:
        """Close the sessions of every thread."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class Jobs:
    """The job and execution routes of one account, through a Client."""

    def __init__(self, client: Client, account: str) -> None:
        self.client = client
        self.account = account
        self.base = f"/jobs/{account}"

    def create(self, spec: Mapping[str, Any]) -> str:
        """Create a job (see job_spec); its id."""
        return self.client.call("POST", self.base, spec, expect=201)[0]["id"]

    def get(self, job_id: str) -> dict:
        """The job."""
        return self.client.call("GET", f"{self.base}/{job_id}", expect=200)

    def start(self, job_id: str) -> str:
        """Start an execution of the job; its id."""
        return self.client.call("POST", f"{self.base}/{job_id}/start", {}, expect=201)["execution_id"]

    def execution(self, job_id: str, execution_id: str) -> dict:
        """One execution's record."""
        return self.client.call("GET", f"{self.base}/{job_id}/executions/{execution_id}", expect=200)

    def executions(self, job_id: str, seconds: float = 60.0) -> list[dict]:
        """Every execution of the job (all pages)."""
        return self.client.collect(f"{self.base}/{job_id}/executions", seconds=seconds)

    def events(self, job_id: str, execution_id: str) -> list[dict]:
        """An execution's events (the first 1000: far more than a benchmark playbook makes)."""
        path = f"{self.base}/{job_id}/executions/{execution_id}/events"
        return self.client.call("GET", path, params={"size": 1000}, expect=200)["results"]

    def wait_final(self, job_id: str, execution_id: str, seconds: float, interval: float = 0.2) -> dict:
        """Poll the execution every `interval` s until its status is final; DeadlineMissed after `seconds`."""
        deadline = Deadline(seconds, f"execution {execution_id}")
        while True:
            document = self.execution(job_id, execution_id)
            if document["status"] in FINAL_STATUSES:
                return document
            deadline.check(f"still {document['status']}")
            time.sleep(min(interval, max(0.001, deadline.remaining())))


def answers_health(base_url: str, timeout: float = 2.0) -> bool:
    """Whether GET /health at `base_url` answers 200."""
    try:
        with requests.Session() as session:
            session.trust_env = False
            return session.get(base_url.rstrip("/") + "/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def account_of_token(token: str) -> str | None:
    """The `acc` claim of a JWT, read without verifying it (only to name the account)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return claims.get("acc")
    except (IndexError, ValueError, AttributeError):
        return None


def job_spec(repository_url: str, playbook: str, *, description: str = "bench",
             host_vars: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A job body: one host `localhost` (with `host_vars` if given) and a repository's playbook."""
    host: dict[str, Any] = {"id": "localhost"}
    if host_vars is not None:
        host["hostVars"] = dict(host_vars)
    return {"description": description, "repository": {"url": repository_url, "defaultPlaybook": playbook},
            "hosts": [host], **extra}


# --------------------------------------------------------------------------- local mode

@dataclass(frozen=True)
class Credentials:
    """What a local.json says about its first account: where the API is and how to sign in."""

    base_url: str
    account: str
    username: str
    password: str
    token: str

    def client(self, timeout: float = 30.0) -> Client:
        """A Client with this bearer token."""
        return Client(self.base_url, self.token, timeout)


def default_local_json() -> Path:
    """${RUNNER_STATE_DIR:-.runner}/local.json, relative to the repository root: `make run`'s."""
    state_dir = Path(os.environ.get("RUNNER_STATE_DIR", ".runner"))
    return (state_dir if state_dir.is_absolute() else ROOT / state_dir) / "local.json"


def read_credentials(local_json: Path) -> Credentials | None:
    """The Credentials of a local.json; None when it is missing, unreadable or incomplete."""
    try:
        document = json.loads(local_json.read_text(encoding="utf-8"))
        return Credentials(document["baseUrl"], document["accountAlias"], document["username"],
                           document["password"], document["bearerToken"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def free_port() -> int:
    """A loopback TCP port nobody listens on now (someone may take it before we do: see LocalMode)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalModeError(RuntimeError):
    """Local mode did not start (the message ends with its log's tail)."""


class LocalMode:
    """`python -m localmode` in a subprocess: fresh state directory, free ports, stopped by stop()."""

    # Variables that would point it at another state directory or port than the ones chosen here;
    # without RUNNER_EMULATOR_PORT the emulator takes a free port of its own.
    PLACEMENT = ("RUNNER_STATE_DIR", "RUNNER_PORT", "RUNNER_HOST", "RUNNER_EMULATOR_PORT")
    PORT_ATTEMPTS = 3

    def __init__(self, startup_timeout: float = 90.0, env: Mapping[str, str] | None = None,
                 stop_timeout: float = 30.0) -> None:
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_env = dict(env or {})
        self.state_dir = Path(tempfile.mkdtemp(prefix="runner-bench-"))
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.credentials: Credentials | None = None

    @property
    def base_url(self) -> str:
        """Where its API listens."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Its stdout and stderr."""
        return self.state_dir / "server.log"

    def start(self) -> Credentials:
        """Start it and wait until it serves; LocalModeError (after cleaning up) when it does not."""
        try:
            for attempt in range(1, self.PORT_ATTEMPTS + 1):
                self._launch()
                try:
                    return self._wait_ready()
                except _PortTaken:
                    # The free port went to someone else between free_port() and local mode's bind.
                    if attempt == self.PORT_ATTEMPTS:
                        raise LocalModeError(f"no free port after {attempt} attempts:\n{self.log_tail()}") from None
                    log(f"port {self.port} was taken meanwhile; retrying on another")
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        self.port = free_port()
        env = {name: value for name, value in os.environ.items() if name not in self.PLACEMENT}
        env.update({"RUNNER_STATE_DIR": str(self.state_dir), "RUNNER_PORT": str(self.port),
                    "PYTHONUNBUFFERED": "1", **self.extra_env})
        python = VENV_BIN / "python"
        with open(self.log_path, "wb") as output:
            self.process = subprocess.Popen(
                [str(python if python.exists() else sys.executable), "-m", "localmode"],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C in the terminal reaches only the benchmark, which
                # stops it (and, if it hangs, kills the group with its workers and emulator).
                start_new_session=True,
                # SIGINT must stop it even when the benchmark was started with SIGINT ignored (`cmd &`).
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        log(f"starting local mode (pid {self.process.pid}, port {self.port}, state {self.state_dir})")

    def _wait_ready(self) -> Credentials:
        assert self.process is not None
        deadline = Deadline(self.startup_timeout, "local mode's start")
        while not deadline.expired:
            if self.process.poll() is not None:
                tail = self.log_tail()
                if self.process.returncode == 1 and "already in use" in tail:
                    raise _PortTaken(tail)
                raise LocalModeError(f"local mode exited with code {self.process.returncode}:\n{tail}")
            if answers_health(self.base_url, timeout=1.0):
                credentials = read_credentials(self.state_dir / "local.json")
                # local.json is written before the API serves, but check it names this instance.
                if credentials is not None and credentials.base_url == self.base_url:
                    log(f"local mode is up on {self.base_url} after "
                        f"{self.startup_timeout - deadline.remaining():.1f} s")
                    self.credentials = credentials
                    return credentials
            time.sleep(0.2)
        raise LocalModeError(f"local mode did not answer GET /health within {self.startup_timeout:g} s:\n"
                             f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of its output."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGINT (it saves its state and stops its workers), SIGKILL to its group if that hangs; remove the state."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                # After SIGINT it ignores SIGTERM (a second signal must not cut its save short): kill it,
                # and its descendants by id: its workers run in sessions of their own, so neither its
                # death nor a kill of its process group would end them.
                log(f"local mode (pid {process.pid}) did not stop within {self.stop_timeout:g} s; killing it")
                for pid in [process.pid, *_descendants(process.pid)]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                process.wait(timeout=10)
            log(f"local mode stopped (exit code {process.returncode})")
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> Credentials:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def _descendants(pid: int) -> list[int]:
    """The ids of a process's children, their children, and so on (Linux /proc; none elsewhere)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found += children
            pending += children
    return found


class _PortTaken(Exception):
    """Local mode found its port in use."""


# --------------------------------------------------------------------------- repositories

# Local mode's workers run in a Lambda-like sandbox (localmode/sandbox.py): a /tmp of their own
# and a non-root user. A repository they clone by file:// must live elsewhere, readable by all.
SCRATCH_PARENT = Path("/var/tmp")


@contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """A temporary directory local mode's sandboxed workers can read (under /var/tmp, mode 0755); removed after."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH_PARENT))
    try:
        path.chmod(0o755)  # mkdtemp makes 0700: the sandbox's user could not enter it
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def debug_playbook(tasks: int = 1) -> str:
    """A playbook for every host, without fact gathering: `tasks` debug tasks named "step <i>"."""
    steps = "".join(f"    - name: step {index}\n      debug:\n        msg: step {index}\n" for index in range(tasks))
    return f"- hosts: all\n  gather_facts: false\n  tasks:\n{steps}"


def _git(arguments: list[str], cwd: Path | None = None) -> None:
    # Identity and signing given here: the user's git configuration must not decide whether it commits.
    command = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false",
               *arguments]
    try:
        subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        # CalledProcessError's own message leaves out what git said.
        raise RuntimeError(f"git {' '.join(arguments)} failed ({exc.returncode}): {exc.stderr.strip()}") from None


def make_repository(parent: Path, files: Mapping[str, str], name: str = "repo") -> Path:
    """A git repository parent/name with `files` (path -> text) committed on master; its path.

    `parent` should come from scratch_directory(), so that local mode's workers can clone it.
    """
    repo = parent / name
    repo.mkdir(parents=True)
    for relative, text in files.items():
        target = repo / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    _git(["init", "-q", "-b", "master"], repo)
    _git(["add", "-A"], repo)
    _git(["commit", "-q", "-m", "bench"], repo)
    return repo


def clone_repository(source: Path, destination: Path) -> Path:
    """A clone of `source` at `destination` (a working tree to run ansible-playbook in); its path."""
    _git(["clone", "-q", str(source), str(destination)])
    return destination


def file_url(path: Path) -> str:
    """The file:// URL of a local repository, as a job's repository.url."""
    return path.resolve().as_uri()


# --------------------------------------------------------------------------- running a benchmark

def guarded(work: Callable[[], T]) -> tuple[T | None, int]:
    """Run a benchmark's `work`: (its result, 0), or (None, exit code) once it stopped and said why.

    1 (FAILED): a deadline was missed; 2 (error): it could not run (local mode did not start, the
    API refused a request it needs, git failed); 130: interrupted. Anything else is a bug: it
    propagates with its traceback.
    """
    try:
        return work(), 0
    except DeadlineMissed as exc:
        log(f"FAILED: {exc}")
        return None, 1
    except (RuntimeError, subprocess.SubprocessError) as exc:  # LocalModeError and ApiError among them
        log(f"error: {exc}")
        return None, 2
    except KeyboardInterrupt:
        log("interrupted")
        return None, 130


def on_local_mode(startup_timeout: float, work: Callable[[Credentials], T], env: Mapping[str, str] | None = None) -> T:
    """work(credentials) on a LocalMode started for it (with `env` added), stopped after."""
    with LocalMode(startup_timeout, env) as local:
        return work(local)


def add_standard_arguments(parser: argparse.ArgumentParser, startup_timeout: float) -> None:
    """--json and --startup-timeout, which every benchmark has."""
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--startup-timeout", type=float, default=startup_timeout,
                        help=f"seconds to wait for local mode (default {startup_timeout:g})")


def run_benchmark(work: Callable[[], R], as_json: bool, print_text: Callable[[R], None],
                  exit_code: Callable[[R], int], document: Callable[[R], Any] = lambda result: result) -> int:
    """A benchmark's main: guarded(work), its result printed as JSON (`document` of it) or as text, the exit code.

    `exit_code` judges the result (e.g. 1 when a run failed); guarded's code when `work` stopped.
    """
    result, code = guarded(work)
    if result is None:
        return code
    if as_json:
        json.dump(document(result), sys.stdout, indent=2)
        print()
    else:
        print_text(result)
    return exit_code(result)
