#!/usr/bin/env python3
"""API benchmark: latency and AWS calls per route, against local mode, over HTTP.

    .venv/bin/python bench/api.py                 # start local mode if none answers, 200 jobs
    .venv/bin/python bench/api.py --jobs 400 --json
    .venv/bin/python bench/api.py --base-url http://127.0.0.1:8000 --token <bearer>
    .venv/bin/python bench/api.py --spawn --jobs 10 --clients 2     # quickest

8 concurrent clients (one keep-alive session each, common.Client) go through phases: GET /health
(a baseline with no AWS call), create jobs (half of them with repository credentials, so their
secrets are sealed with KMS), get each, list pages (page 0 and pages > 0), update each (same body,
new description), delete each. Every answer of local mode carries `X-Runner-AWS-Calls` (the AWS
calls the request made); the benchmark reports per route p50/p99 latency (common.percentile:
linear interpolation), the count of AWS calls (median/max, DynamoDB/KMS/other) and the distinct
call lists seen, then checks the targets (PASS/FAIL).

Exit code: targets are a measurement, a FAIL does not change it; 1 when a request failed (non-2xx,
connection error) or the workload overran --deadline; 2 when the benchmark could not start.

The server: --base-url/--token if given; else the one of ${RUNNER_STATE_DIR:-.runner}/local.json
if it answers GET /health; else local mode started here (common.LocalMode: `python -m localmode`
with a fresh RUNNER_STATE_DIR and a free RUNNER_PORT), stopped with SIGINT at the end.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests

from common import (ApiError, Client, Credentials, Deadline, LocalMode, account_of_token, add_standard_arguments,
                    answers_health, default_local_json, job_spec, log, read_credentials, run_benchmark,
                    summarize as summary_of)

WORKERS = 8
PAGE_SIZE = 20
CALLS_HEADER = "X-Runner-AWS-Calls"
DYNAMODB_WRITES = {"TransactWriteItems", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}
GET_P99_TARGET_MS = 30.0
ROUTES = ("health", "create", "create+secrets", "get", "list", "list page>0",
          "update", "update+secrets", "delete")


# --------------------------------------------------------------------------- measurements

@dataclass
class Sample:
    """One timed request."""

    route: str
    ms: float
    status: int              # 0: no answer (connection error, timeout)
    calls: list[str] | None  # None: the answer carried no X-Runner-AWS-Calls header


@dataclass
class Failure:
    """One failed request (non-2xx, not the status expected, or no answer)."""

    route: str
    method: str
    path: str
    status: int
    detail: str


@dataclass
class Recorder:
    """The samples and failures of every worker thread."""

    samples: list[Sample] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sample: Sample, failure: Failure | None) -> None:
        """Record one request."""
        with self.lock:
            self.samples.append(sample)
            if failure is not None:
                self.failures.append(failure)


def parse_calls(header: str | None) -> list[str] | None:
    """The AWS calls an X-Runner-AWS-Calls header lists ("-": none); None without the header."""
    if header is None:
        return None
    header = header.strip()
    if header in ("", "-"):
        return []
    return [name.strip() for name in header.split(",") if name.strip()]


def service_of(call: str) -> str:
    """dynamodb, kms or other, for a call named "<Service>.<Operation>"."""
    service = call.split(".", 1)[0].lower()
    return service if service in ("dynamodb", "kms") else "other"


def summarize(route: str, all_samples: list[Sample]) -> dict[str, Any]:
    """Figures of the route's successful (2xx) requests; failed ones are only counted."""
    samples = [s for s in all_samples if 200 <= s.status < 300]
    latencies = summary_of(s.ms for s in samples)
    with_calls = [s.calls for s in samples if s.calls is not None]
    counts = [len(c) for c in with_calls]
    lists = Counter(",".join(c) or "-" for c in with_calls)
    split = {kind: [sum(1 for call in c if service_of(call) == kind) for c in with_calls]
             for kind in ("dynamodb", "kms", "other")}
    return {
        "route": route,
        "n": len(samples),
        "failed": len(all_samples) - len(samples),
        "p50_ms": round(latencies.median, 2) if latencies else None,
        "p99_ms": round(latencies.p99, 2) if latencies else None,
        "mean_ms": round(statistics.fmean(s.ms for s in samples), 2) if latencies else None,
        "max_ms": round(latencies.max, 2) if latencies else None,
        "calls_reported": len(with_calls),
        "calls_median": statistics.median(counts) if counts else None,
        "calls_max": max(counts) if counts else None,
        **{kind: {"median": statistics.median(split[kind]), "max": max(split[kind])} if counts else None
           for kind in ("dynamodb", "kms", "other")},
        "call_lists": [{"calls": calls, "count": n} for calls, n in lists.most_common()],
    }


# --------------------------------------------------------------------------- the client side

class MeasuredClient:
    """common.Client (one keep-alive session per worker thread), each request timed and recorded."""

    def __init__(self, client: Client, recorder: Recorder, deadline: Deadline) -> None:
        self.client = client
        self.recorder = recorder
        self.deadline = deadline

    def call(self, route: str | None, method: str, path: str, expect: int,
             body: Any = None) -> requests.Response | None:
        """One request, timed; route None = warm-up (not recorded, but failures still count)."""
        self.deadline.check()  # each request is bounded by --timeout; the whole run by --deadline
        name = route or "warm-up"
        start = time.perf_counter()
        try:
            answer = self.client.request(method, path, body, expect=expect)
        except ApiError as error:
            ms = (time.perf_counter() - start) * 1000.0
            headers = error.response.headers if error.response is not None else {}
            self.recorder.add(Sample(name, ms, error.status, parse_calls(headers.get(CALLS_HEADER))),
                              Failure(name, method, path, error.status, error.detail))
            return None
        ms = (time.perf_counter() - start) * 1000.0
        self.recorder.add(Sample(name, ms, answer.status_code, parse_calls(answer.headers.get(CALLS_HEADER))), None)
        return answer


def job_body(n: int, secrets: bool, description: str = "bench") -> dict[str, Any]:
    """A job on a repository nobody clones (no execution starts); with secrets, they are sealed with KMS."""
    body = job_spec("https://example.com/org/repo.git", "site.yml", description=description,
                    host_vars={"ansible_connection": "local"})
    if secrets:
        body["repository"]["credentials"] = {"username": "bench", "password": f"s3cret-{n}"}
    return body


@dataclass
class Job:
    """A job of the workload: its number, whether it has secrets, its id once created."""

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
        future.result()  # re-raises a worker's DeadlineMissed
    elapsed = time.perf_counter() - start
    count = len(recorder.samples) - before
    log(f"{name}: {count} requests in {elapsed:.2f} s ({count / elapsed if elapsed else 0:.0f} req/s)")
    return elapsed


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """`items` dealt round-robin into `parts` slices."""
    return [items[i::parts] for i in range(parts)]


def workload(client: MeasuredClient, account: str, jobs: int, lists: int, warmup: bool,
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

def resolve_target(args: argparse.Namespace) -> tuple[str, str, str, LocalMode | None]:
    """(base URL, token, account alias, the local mode started here or None)."""
    local = read_credentials(Path(args.local_json)) if args.local_json else None
    if args.base_url or args.token:
        base_url = args.base_url or (local.base_url if local else "http://127.0.0.1:8000")
        token = args.token or (local.token if local else None)
        if not token:
            raise RuntimeError("no token: pass --token, or have a local.json with bearerToken")
        account = args.account or account_of_token(token) or (local.account if local else None)
        if not account:
            raise RuntimeError("the token names no account (is it a Runner bearer token?): pass --account")
        return base_url, token, account, None
    if not args.spawn and local is not None and answers_health(local.base_url):
        log(f"using the running local mode at {local.base_url} ({args.local_json})")
        return local.base_url, local.token, args.account or local.account, None
    server = LocalMode(args.startup_timeout)
    started: Credentials = server.start()
    return started.base_url, started.token, args.account or started.account, server


# --------------------------------------------------------------------------- targets and output

def targets(stats: dict[str, dict]) -> list[dict[str, Any]]:
    """PASS/FAIL/n/a of each target: the AWS calls per route and the get p99."""
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
    """A median call count as text: whole numbers without decimals, ? for none."""
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def print_report(report: dict[str, Any]) -> None:
    """The report as text: the route table, the call lists, phases, failures and targets."""
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
    """Run the benchmark; the exit code."""
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
    parser.add_argument("--local-json", default=str(default_local_json()),
                        help="local.json of a running local mode (default ${RUNNER_STATE_DIR:-.runner}/local.json)")
    parser.add_argument("--spawn", action="store_true",
                        help="always start a fresh local mode, even if one answers at local.json's URL")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the unrecorded warm-up requests")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    parser.add_argument("--deadline", type=float, default=600.0,
                        help="seconds the whole workload may take; past it, the benchmark stops and fails "
                             "(default 600)")
    add_standard_arguments(parser, startup_timeout=90.0)
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    lists = args.lists if args.lists is not None else max(2, args.jobs // 2)

    recorder = Recorder()

    def measure() -> dict[str, Any]:
        """The workload against the target server; the report."""
        with ExitStack() as cleanup:
            base_url, token, account, server = resolve_target(args)
            if server is not None:
                cleanup.callback(server.stop)
            client = cleanup.enter_context(Client(base_url, token, args.timeout))
            # A wrong token or account would fail every request of the workload: say so once, up front.
            client.call("GET", f"/jobs/{account}", params={"page": 0, "size": 1}, expect=200)
            measured = MeasuredClient(client, recorder, Deadline(args.deadline, "the workload (--deadline)"))
            start = time.perf_counter()
            interrupted = False
            try:
                phases = workload(measured, account, args.jobs, lists, args.warmup, args.clients)
            except KeyboardInterrupt:  # report what was measured so far
                phases, interrupted = {}, True
            seconds = time.perf_counter() - start
        by_route: dict[str, list[Sample]] = {}
        for sample in recorder.samples:
            if sample.route != "warm-up":
                by_route.setdefault(sample.route, []).append(sample)
        stats = {route: summarize(route, by_route[route]) for route in ROUTES if route in by_route}
        return {
            "baseUrl": base_url, "account": account, "workers": args.clients, "jobs": args.jobs,
            "requests": sum(s["n"] for s in stats.values()), "seconds": round(seconds, 2),
            "phases": {k: round(v, 2) for k, v in phases.items()},
            "routes": stats,
            "failures": [vars(f) for f in recorder.failures],
            "targets": targets(stats),
            "interrupted": interrupted,
        }

    def exit_code(report: dict[str, Any]) -> int:
        """130 when interrupted, 1 when a request failed, else 0."""
        if report["interrupted"]:
            log("interrupted")
            return 130
        return 1 if report["failures"] else 0

    return run_benchmark(measure, args.json, print_report, exit_code)

if __name__ == "__main__":
    sys.exit(main())
