#!/usr/bin/env python3
"""API benchmark: latency and AWS calls per route, against local mode, over HTTP.

    .venv/bin/python bench/api.py                 # start local mode if none answers, 200 jobs
    .venv/bin/python bench/api.py --jobs 400 --json
    .venv/bin/python bench/api.py --base-url http://127.0.0.1:8000 --token <bearer>

8 concurrent clients (one keep-alive requests.Session each) go through phases: GET /health (a
baseline with no AWS call), create jobs (half of them with repository credentials, so their
secrets are sealed with KMS), get each, list pages (page 0 and pages > 0), update each (same body,
new description), delete each. Every answer of
local mode carries `X-Runner-AWS-Calls` (the AWS calls the request made); the benchmark reports
per route p50/p99 latency, the count of AWS calls (median/max, DynamoDB/KMS/other) and the distinct
call lists seen, then checks the targets (PASS/FAIL). Targets are a measurement: a FAIL does not
change the exit code; a failed request (non-2xx, connection error) does (exit 1).

The server: --base-url/--token if given; else the one of ${RUNNER_STATE_DIR:-.runner}/local.json
if it answers GET /health; else local mode started here (`python -m localmode` with a
fresh RUNNER_STATE_DIR and a free RUNNER_PORT), stopped with SIGINT at the end.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 8
PAGE_SIZE = 20
CALLS_HEADER = "X-Runner-AWS-Calls"
DYNAMODB_WRITES = {"TransactWriteItems", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}
GET_P99_TARGET_MS = 30.0
ROUTES = ("health", "create", "create+secrets", "get", "list", "list page>0",
          "update", "update+secrets", "delete")


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- measurements

@dataclass
class Sample:
    route: str
    ms: float
    status: int              # 0: no answer (connection error, timeout)
    calls: list[str] | None  # None: the answer carried no X-Runner-AWS-Calls header


@dataclass
class Failure:
    route: str
    method: str
    path: str
    status: int
    detail: str


@dataclass
class Recorder:
    samples: list[Sample] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sample: Sample, failure: Failure | None) -> None:
        with self.lock:
            self.samples.append(sample)
            if failure is not None:
                self.failures.append(failure)


def parse_calls(header: str | None) -> list[str] | None:
    if header is None:
        return None
    header = header.strip()
    if header in ("", "-"):
        return []
    return [name.strip() for name in header.split(",") if name.strip()]


def percentile(values: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def service_of(call: str) -> str:
    service = call.split(".", 1)[0].lower()
    return service if service in ("dynamodb", "kms") else "other"


def summarize(route: str, all_samples: list[Sample]) -> dict[str, Any]:
    """Figures of the route's successful (2xx) requests; failed ones are only counted."""
    samples = [s for s in all_samples if 200 <= s.status < 300]
    latencies = [s.ms for s in samples]
    with_calls = [s.calls for s in samples if s.calls is not None]
    counts = [len(c) for c in with_calls]
    lists = Counter(",".join(c) or "-" for c in with_calls)
    split = {kind: [sum(1 for call in c if service_of(call) == kind) for c in with_calls]
             for kind in ("dynamodb", "kms", "other")}
    return {
        "route": route,
        "n": len(samples),
        "failed": len(all_samples) - len(samples),
        "p50_ms": round(percentile(latencies, 50), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 2) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        "max_ms": round(max(latencies), 2) if latencies else None,
        "calls_reported": len(with_calls),
        "calls_median": statistics.median(counts) if counts else None,
        "calls_max": max(counts) if counts else None,
        "dynamodb": {"median": statistics.median(split["dynamodb"]), "max": max(split["dynamodb"])}
        if counts else None,
        "kms": {"median": statistics.median(split["kms"]), "max": max(split["kms"])} if counts else None,
        "other": {"median": statistics.median(split["other"]), "max": max(split["other"])} if counts else None,
        "call_lists": [{"calls": calls, "count": n} for calls, n in lists.most_common()],
    }


# --------------------------------------------------------------------------- the client side

class Client:
    """One keep-alive session per worker thread."""

    def __init__(self, base_url: str, token: str, recorder: Recorder, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.recorder = recorder
        self.timeout = timeout
        self._local = threading.local()

    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"Authorization": f"Bearer {self.token}",
                                    "Content-Type": "application/json",
                                    "Accept": "application/json"})
            self._local.session = session
        return session

    def call(self, route: str | None, method: str, path: str, expect: int,
             body: Any = None) -> requests.Response | None:
        """One request, timed; route None = warm-up (not recorded, but failures still count)."""
        data = json.dumps(body) if body is not None else None
        start = time.perf_counter()
        try:
            answer = self.session().request(method, self.base_url + path, data=data, timeout=self.timeout)
            _ = answer.content
        except requests.RequestException as exc:
            ms = (time.perf_counter() - start) * 1000.0
            self.recorder.add(Sample(route or "warm-up", ms, 0, None),
                              Failure(route or "warm-up", method, path, 0, f"{type(exc).__name__}: {exc}"))
            return None
        ms = (time.perf_counter() - start) * 1000.0
        failure = None
        if not 200 <= answer.status_code < 300 or answer.status_code != expect:
            failure = Failure(route or "warm-up", method, path, answer.status_code, answer.text[:300])
        sample = Sample(route or "warm-up", ms, answer.status_code, parse_calls(answer.headers.get(CALLS_HEADER)))
        self.recorder.add(sample, failure)
        return answer if failure is None else None

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()


def job_body(n: int, secrets: bool, description: str = "bench") -> dict:
    repository: dict[str, Any] = {"url": "https://example.com/org/repo.git", "defaultPlaybook": "site.yml"}
    if secrets:
        repository["credentials"] = {"username": "bench", "password": f"s3cret-{n}"}
    return {"description": description, "repository": repository,
            "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}]}


@dataclass
class Job:
    n: int
    secrets: bool
    job_id: str | None = None


def run_phase(name: str, pool: ThreadPoolExecutor, slices: list[list[Any]],
              work: Callable[[Any], None], recorder: Recorder) -> float:
    """Each worker runs `work` over its slice; answers the phase's wall time in seconds."""
    before = len(recorder.samples)
    start = time.perf_counter()
    futures = [pool.submit(lambda items=items: [work(item) for item in items]) for items in slices]
    for future in futures:
        future.result()
    elapsed = time.perf_counter() - start
    count = len(recorder.samples) - before
    log(f"{name}: {count} requests in {elapsed:.2f} s ({count / elapsed if elapsed else 0:.0f} req/s)")
    return elapsed


def split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


def workload(client: Client, account: str, jobs: int, lists: int, warmup: bool,
             workers: int = WORKERS) -> dict[str, float]:
    """The phases; answers each phase's wall time."""
    base = f"/jobs/{account}"
    phases: dict[str, float] = {}
    recorder = client.recorder
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench") as pool:
        if warmup:  # one of every request per worker, not recorded: clients, connections, imports
            def warm(w: int) -> None:
                client.call(None, "GET", f"{base}?page=0&size=1", 200)
                for secrets in (False, True):
                    created = client.call(None, "POST", base, 201, job_body(-1, secrets, "bench warm-up"))
                    if created is None:
                        continue
                    job_id = created.json()[0]["id"]
                    client.call(None, "GET", f"{base}/{job_id}", 200)
                    client.call(None, "PUT", f"{base}/{job_id}", 200, job_body(-1, secrets, "bench warm-up 2"))
                    client.call(None, "DELETE", f"{base}/{job_id}", 204)
            run_phase("warm-up", pool, split(list(range(workers)), workers), warm, recorder)

        # Baseline: a public route that makes no AWS call (the HTTP stack's own latency).
        def health(_: int) -> None:
            client.call("health", "GET", "/health", 200)
        phases["health"] = run_phase("health", pool, split(list(range(max(workers, jobs // 2))), workers),
                                     health, recorder)

        todo = [Job(n, secrets=n % 2 == 1) for n in range(jobs)]

        def create(job: Job) -> None:
            answer = client.call("create+secrets" if job.secrets else "create", "POST", base, 201,
                                 job_body(job.n, job.secrets))
            if answer is not None:
                job.job_id = answer.json()[0]["id"]
        phases["create"] = run_phase("create", pool, split(todo, workers), create, recorder)
        created = [job for job in todo if job.job_id]

        def get(job: Job) -> None:
            client.call("get", "GET", f"{base}/{job.job_id}", 200)
        phases["get"] = run_phase("get", pool, split(created, workers), get, recorder)

        # Half the list requests read page 0, half a page > 0 spread over the pages that exist.
        pages_beyond = max(1, (len(created) - 1) // PAGE_SIZE)
        pages = [0 if i % 2 == 0 else 1 + (i // 2) % pages_beyond for i in range(lists)]

        def list_page(page: int) -> None:
            client.call("list" if page == 0 else "list page>0", "GET",
                        f"{base}?page={page}&size={PAGE_SIZE}", 200)
        phases["list"] = run_phase("list", pool, split(pages, workers), list_page, recorder)

        def update(job: Job) -> None:
            client.call("update+secrets" if job.secrets else "update", "PUT", f"{base}/{job.job_id}", 200,
                        job_body(job.n, job.secrets, f"bench updated {job.n}"))
        phases["update"] = run_phase("update", pool, split(created, workers), update, recorder)

        def delete(job: Job) -> None:
            client.call("delete", "DELETE", f"{base}/{job.job_id}", 204)
        phases["delete"] = run_phase("delete", pool, split(created, workers), delete, recorder)
    return phases


# --------------------------------------------------------------------------- the server side

def local_json_path() -> Path:
    state_dir = Path(os.environ.get("RUNNER_STATE_DIR", ".runner"))
    if not state_dir.is_absolute():
        state_dir = ROOT / state_dir
    return state_dir / "local.json"


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def answers_health(base_url: str, timeout: float = 2.0) -> bool:
    try:
        return requests.get(base_url.rstrip("/") + "/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def account_of_token(token: str) -> str | None:
    """The `acc` claim of a JWT, read without verifying it (only to name the account)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return claims.get("acc")
    except (IndexError, ValueError, AttributeError):
        return None


class LocalMode:
    """`python -m localmode` started here, in a fresh state directory, on a free port."""

    def __init__(self, startup_timeout: float) -> None:
        self.state_dir = Path(tempfile.mkdtemp(prefix="runner-bench-"))
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> dict:
        python = ROOT / ".venv" / "bin" / "python"
        env = {**os.environ, "RUNNER_STATE_DIR": str(self.state_dir), "RUNNER_PORT": str(self.port)}
        env.pop("RUNNER_HOST", None)
        self._log = open(self.state_dir / "server.log", "wb")
        self.process = subprocess.Popen(
            [str(python if python.exists() else sys.executable), "-m", "localmode"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # SIGINT stops it even when this benchmark was started with SIGINT ignored (`cmd &`).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        log(f"starting local mode (pid {self.process.pid}, port {self.port}, state {self.state_dir})")
        base_url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"local mode exited with code {self.process.returncode}:\n{self.log_tail()}")
            if answers_health(base_url, timeout=1.0):
                local = read_json(self.state_dir / "local.json")
                if local and local.get("bearerToken"):
                    log(f"local mode is up on {base_url} after {self.startup_timeout - (deadline - time.monotonic()):.1f} s")
                    return local
            time.sleep(0.2)
        raise RuntimeError(f"local mode did not answer GET /health within {self.startup_timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.state_dir / "server.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"local mode (pid {self.process.pid}) did not stop on SIGINT within 30 s; terminating it")
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            log(f"local mode stopped (exit code {self.process.returncode})")
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def on_local_mode(startup_timeout: float, work: Callable[[dict], Any]) -> tuple[int, Any]:
    """Start local mode, answer (0, work(local.json)) and stop it; (2, None) when it cannot start."""
    server = LocalMode(startup_timeout)
    try:
        local = server.start()
    except RuntimeError as error:
        print(error, file=sys.stderr)
        server.stop()
        return 2, None
    try:
        return 0, work(local)
    finally:
        server.stop()


def resolve_target(args: argparse.Namespace) -> tuple[str, str, str, LocalMode | None]:
    """(base URL, token, account alias, the local mode started here or None)."""
    local = read_json(Path(args.local_json)) if args.local_json else None
    if args.base_url or args.token:
        base_url = args.base_url or (local or {}).get("baseUrl") or "http://127.0.0.1:8000"
        token = args.token or (local or {}).get("bearerToken")
        if not token:
            raise RuntimeError("no token: pass --token, or have a local.json with bearerToken")
        account = args.account or account_of_token(token) or (local or {}).get("accountAlias")
        if not account:
            raise RuntimeError("the token names no account (is it a Runner bearer token?): pass --account")
        return base_url, token, account, None
    if not args.spawn and local and local.get("baseUrl") and local.get("bearerToken") \
            and answers_health(local["baseUrl"]):
        log(f"using the running local mode at {local['baseUrl']} ({args.local_json})")
        token = local["bearerToken"]
        return local["baseUrl"], token, args.account or local.get("accountAlias") or account_of_token(token), None
    server = LocalMode(args.startup_timeout)
    try:
        started = server.start()
    except BaseException:
        server.stop()
        raise
    token = started["bearerToken"]
    return started["baseUrl"], token, args.account or started.get("accountAlias") or account_of_token(token), server


def check_token(base_url: str, token: str, account: str) -> None:
    answer = requests.get(f"{base_url.rstrip('/')}/jobs/{account}?page=0&size=1",
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    if answer.status_code != 200:
        raise RuntimeError(f"GET /jobs/{account} answered {answer.status_code} with that token: "
                           f"{answer.text[:200]}")


# --------------------------------------------------------------------------- targets and output

def targets(stats: dict[str, dict]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []

    def calls_of(route: str) -> list[list[str]]:
        return [entry["calls"].split(",") if entry["calls"] != "-" else []
                for entry in stats.get(route, {}).get("call_lists", [])]

    def add(name: str, route: str, ok: bool | None, measured: str) -> None:
        results.append({"target": name, "route": route,
                        "result": "n/a" if ok is None else ("PASS" if ok else "FAIL"), "measured": measured})

    def lists_text(route: str) -> str:
        return "; ".join(f"{e['calls']} x{e['count']}" for e in stats.get(route, {}).get("call_lists", [])) or "none"

    route_calls = calls_of("get")
    add("get = 1 DynamoDB call", "get",
        all(len(c) == 1 and service_of(c[0]) == "dynamodb" for c in route_calls) if route_calls else None,
        lists_text("get"))
    route_calls = calls_of("list")
    add("list page 0 <= 2 AWS calls", "list",
        all(len(c) <= 2 for c in route_calls) if route_calls else None, lists_text("list"))
    for route, kms in (("create", 0), ("create+secrets", 1), ("update", 0), ("update+secrets", 1)):
        route_calls = calls_of(route)

        def fits(c: list[str]) -> bool:
            writes = [x for x in c if service_of(x) == "dynamodb" and x.split(".", 1)[1] in DYNAMODB_WRITES]
            kms_calls = [x for x in c if service_of(x) == "kms"]
            return len(writes) == 1 and len(kms_calls) == kms and len(c) == 1 + kms
        add(f"{route} = 1 DynamoDB write" + (" + 1 KMS call" if kms else ""), route,
            all(fits(c) for c in route_calls) if route_calls else None, lists_text(route))
    get = stats.get("get")
    add(f"get p99 <= {GET_P99_TARGET_MS:.0f} ms", "get",
        get["p99_ms"] <= GET_P99_TARGET_MS if get and get["n"] else None,
        f"p99 {get['p99_ms']:.1f} ms" if get and get["n"] else "no samples")
    return results


def median_text(value: float | None) -> str:
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def print_report(report: dict[str, Any]) -> None:
    out = sys.stdout
    print(f"Runner API benchmark: {report['baseUrl']}  account {report['account']}  "
          f"{report['workers']} clients  {report['jobs']} jobs  {report['requests']} requests "
          f"in {report['seconds']:.1f} s", file=out)
    header = (f"{'route':<15} {'n':>5} {'p50_ms':>8} {'p99_ms':>8} {'max_ms':>8} "
              f"{'aws_calls(median/max)':>22} {'ddb':>4} {'kms':>4} {'oth':>4}  calls")
    print(header, file=out)
    print("-" * len(header), file=out)
    for route in ROUTES:
        s = report["routes"].get(route)
        if not s:
            continue
        if not s["n"]:
            print(f"{route:<15} {0:>5}  (all {s['failed']} requests failed)", file=out)
            continue
        if s["calls_reported"]:
            calls = f"{median_text(s['calls_median'])}/{s['calls_max']}"
            kinds = [median_text(s[k]["median"]) for k in ("dynamodb", "kms", "other")]
            top = s["call_lists"][0]["calls"]
            more = len(s["call_lists"]) - 1
            shown = top + (f"  (+{more} other list{'s' if more > 1 else ''})" if more else "")
        else:
            calls, kinds, shown = "n/a", ["?", "?", "?"], f"(no {CALLS_HEADER} header)"
        print(f"{route:<15} {s['n']:>5} {s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['max_ms']:>8.1f} "
              f"{calls:>22} {kinds[0]:>4} {kinds[1]:>4} {kinds[2]:>4}  {shown}"
              + (f"  [{s['failed']} failed, not counted]" if s["failed"] else ""), file=out)
    print("", file=out)
    print("distinct AWS call lists per route (DynamoDB / KMS / other):", file=out)
    for route in ROUTES:
        s = report["routes"].get(route)
        if not s or not s["call_lists"]:
            continue
        print(f"  {route}:", file=out)
        for entry in s["call_lists"]:
            names = [] if entry["calls"] == "-" else entry["calls"].split(",")
            parts = {k: [n.split(".", 1)[-1] for n in names if service_of(n) == k] for k in ("dynamodb", "kms", "other")}
            other = [n for n in names if service_of(n) == "other"]
            print(f"    x{entry['count']:<5} {entry['calls']}", file=out)
            print(f"           dynamodb[{len(parts['dynamodb'])}]: {','.join(parts['dynamodb']) or '-'}"
                  f"   kms[{len(parts['kms'])}]: {','.join(parts['kms']) or '-'}"
                  f"   other[{len(other)}]: {','.join(other) or '-'}", file=out)
    print("", file=out)
    print("phases (wall time):  " + "  ".join(f"{k} {v:.2f}s" for k, v in report["phases"].items()), file=out)
    print(f"failed requests (non-2xx or no answer): {len(report['failures'])}", file=out)
    for failure in report["failures"][:10]:
        print(f"  {failure['route']}: {failure['method']} {failure['path']} -> {failure['status']} "
              f"{failure['detail']}", file=out)
    print("", file=out)
    print("targets:", file=out)
    for target in report["targets"]:
        print(f"  {target['result']:<4}  {target['target']:<46} {target['measured']}", file=out)
    health = report["routes"].get("health")
    if health and health["n"]:
        print(f"baseline: GET /health (public, no AWS call) p50 {health['p50_ms']:.1f} ms, "
              f"p99 {health['p99_ms']:.1f} ms: the latency of the HTTP layer alone", file=out)


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", help="the API to measure (default: local.json's, or local mode started here)")
    parser.add_argument("--token", help="bearer token (default: local.json's)")
    parser.add_argument("--account", help="account alias (default: the token's)")
    parser.add_argument("--clients", type=int, default=WORKERS,
                        help=f"concurrent clients (default {WORKERS}; the targets are for {WORKERS})")
    parser.add_argument("--jobs", type=int, default=200, help="jobs created, read, updated, deleted (default 200)")
    parser.add_argument("--lists", type=int, default=None,
                        help="list requests, half page 0, half page > 0 (default jobs/2)")
    parser.add_argument("--local-json", default=str(local_json_path()),
                        help="local.json of a running local mode (default ${RUNNER_STATE_DIR:-.runner}/local.json)")
    parser.add_argument("--spawn", action="store_true",
                        help="always start a fresh local mode, even if one answers at local.json's URL")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the unrecorded warm-up requests")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    parser.add_argument("--startup-timeout", type=float, default=90.0, help="seconds to wait for local mode")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    lists = args.lists if args.lists is not None else max(2, args.jobs // 2)

    server: LocalMode | None = None
    interrupted = False
    try:
        base_url, token, account, server = resolve_target(args)
        check_token(base_url, token, account)
        recorder = Recorder()
        client = Client(base_url, token, recorder, args.timeout)
        start = time.perf_counter()
        try:
            phases = workload(client, account, args.jobs, lists, args.warmup, args.clients)
        except KeyboardInterrupt:
            interrupted = True
            phases = {}
        seconds = time.perf_counter() - start
    except (RuntimeError, requests.RequestException) as exc:
        log(f"error: {exc}")
        return 2
    finally:
        if server is not None:
            server.stop()

    by_route: dict[str, list[Sample]] = {}
    for sample in recorder.samples:
        if sample.route != "warm-up":
            by_route.setdefault(sample.route, []).append(sample)
    stats = {route: summarize(route, by_route[route]) for route in ROUTES if route in by_route}
    report = {
        "baseUrl": base_url, "account": account, "workers": args.clients, "jobs": args.jobs,
        "requests": sum(s["n"] for s in stats.values()), "seconds": round(seconds, 2),
        "phases": {k: round(v, 2) for k, v in phases.items()},
        "routes": stats,
        "failures": [vars(f) for f in recorder.failures],
        "targets": targets(stats),
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_report(report)
    if interrupted:
        log("interrupted")
        return 130
    return 1 if recorder.failures else 0


if __name__ == "__main__":
    sys.exit(main())
