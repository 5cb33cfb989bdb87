#!/usr/bin/env python3
"""Execution overhead benchmark: a 1-task playbook through the API versus bare ansible-playbook.

    .venv/bin/python bench/overhead.py                  # start local mode here, 10 + 20 runs
    .venv/bin/python bench/overhead.py --json
    .venv/bin/python bench/overhead.py --runs 5 --burst 8 --workers 2

A temporary git repository holds `hello.yml` (one debug task on localhost). The phases:

0. Warm-up (--warmup rounds, not counted): --workers executions started at once, so that every
   worker process has handled a message (a worker's first message costs ~0.5 s more: it builds
   its AWS clients then), and one bare run. Its figures are printed as the cold-worker ones.
1. Sequential: --runs executions through the API (timed from the POST /start to the GET that
   shows SUCCESS, polling every --poll seconds), interleaved with as many bare runs of
   `.venv/bin/ansible-playbook -i localhost, -c local hello.yml` in a clone of the same repository
   (timed as the subprocess). Reported: both medians, their difference (the overhead per
   execution; target <= 1.0 s) and their ratio.
2. Burst: --burst executions started at once (POSTs from a thread pool, each on a keep-alive
   connection its thread opened before; --fresh-connections: connect at once too, which local
   mode's listen backlog of 5 answers with connection resets now and then), timed until all are
   seen SUCCESS (one list request per poll); versus --burst bare runs on a pool as wide as local
   mode's worker processes (--workers, default ${RUNNER_LOCAL_WORKERS:-4}). Reported: both wall
   times and API throughput / bare throughput (target >= 0.8).

Where the API's time goes, from each execution's own record (same host, so epoch clocks agree):
  accept  = created_time - the client's POST      (the start request, until the record exists)
  queue   = timers[0].start - created_time        (Step Functions + SQS + waiting for a worker)
  run     = timers[0].end - timers[0].start       (the worker's attempt: clone, ansible, writes)
  seen    = when the poll saw it final - timers[0].end   (the polling's resolution)
and, inside `run` (sequential phase, from the execution's events): before the first ansible event
(claim, git clone, inventory, ansible-runner start-up), ansible's own events, after the last one.

The server: local mode started here (`python -m localmode`, fresh RUNNER_STATE_DIR, free
RUNNER_PORT, RUNNER_LOCAL_WORKERS=--workers), stopped with SIGINT at the end; or --base-url and
--token of a running one on this host (it must see the file:// repository; pass --workers).
Targets are a measurement: a FAIL does not change the exit code. The exit code is 1 when a run did
not end SUCCESS (API or bare) or the API answered an error, 2 when the benchmark could not start.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PLAYBOOK = "hello.yml"
PLAYBOOK_TEXT = "- hosts: all\n  gather_facts: false\n  tasks:\n    - debug: msg=hello\n"
FINAL = {"SUCCESS", "FAILURE", "INIT_FAILURE", "STOPPED", "KILLED"}
OVERHEAD_TARGET_S = 1.0
THROUGHPUT_TARGET = 0.8


def _load_api_bench():
    """bench/api.py (for LocalMode and account_of_token), under a name no other module uses."""
    spec = importlib.util.spec_from_file_location("runner_bench_api", Path(__file__).with_name("api.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


_api = _load_api_bench()
LocalMode = _api.LocalMode
account_of_token = _api.account_of_token


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def now_ms() -> float:
    return time.time() * 1000.0


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --------------------------------------------------------------------------- the repository

def make_repository(directory: Path) -> tuple[Path, Path]:
    """A git repository with hello.yml on master, and a clone of it for the bare runs."""
    repo = directory / "repo"
    repo.mkdir()
    (repo / PLAYBOOK).write_text(PLAYBOOK_TEXT, encoding="utf-8")
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}
    for args in (["init", "-q", "-b", "master"], ["add", PLAYBOOK], ["commit", "-q", "-m", "hello"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    checkout = directory / "checkout"
    subprocess.run(["git", "clone", "-q", str(repo), str(checkout)], env=env, check=True, capture_output=True)
    return repo, checkout


# --------------------------------------------------------------------------- bare ansible-playbook

@dataclass
class BareRun:
    seconds: float
    ok: bool
    detail: str = ""


def bare_environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False"}


def bare_run(checkout: Path, env: dict[str, str], timeout: float) -> BareRun:
    python = VENV_BIN / "python"
    command = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", PLAYBOOK,
               "-e", f"ansible_python_interpreter={python}"]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return BareRun(time.perf_counter() - start, False, f"timed out after {timeout:g} s")
    seconds = time.perf_counter() - start
    ok = done.returncode == 0 and "ok=1" in done.stdout and "failed=0" in done.stdout
    detail = "" if ok else f"rc {done.returncode}: {(done.stdout + done.stderr).strip()[-400:]}"
    return BareRun(seconds, ok, detail)


# --------------------------------------------------------------------------- the API

class ApiError(Exception):
    """The API answered an error (or did not answer)."""


class Api:
    """One keep-alive session per thread."""

    def __init__(self, base_url: str, token: str, account: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.account = account
        self.timeout = timeout
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self.requests = 0
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"Authorization": f"Bearer {self.token}",
                                    "Content-Type": "application/json", "Accept": "application/json"})
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def call(self, method: str, path: str, expect: int, body: Any = None) -> Any:
        with self._lock:
            self.requests += 1
        try:
            answer = self._session().request(method, self.base_url + path, timeout=self.timeout,
                                             data=json.dumps(body) if body is not None else None)
        except requests.RequestException as exc:
            raise ApiError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if answer.status_code != expect:
            raise ApiError(f"{method} {path} answered {answer.status_code} (expected {expect}): {answer.text[:300]}")
        return answer.json()

    def create_job(self, repo: Path, description: str) -> str:
        body = {"description": description,
                "repository": {"url": repo.resolve().as_uri(), "defaultPlaybook": PLAYBOOK},
                "hosts": [{"id": "localhost"}]}
        created = self.call("POST", f"/jobs/{self.account}", 201, body)
        return created[0]["id"]

    def start(self, job_id: str) -> dict:
        return self.call("POST", f"/jobs/{self.account}/{job_id}/start", 201, {})

    def execution(self, job_id: str, execution_id: str) -> dict:
        return self.call("GET", f"/jobs/{self.account}/{job_id}/executions/{execution_id}", 200)

    def executions(self, job_id: str) -> list[dict]:
        results: list[dict] = []
        page = 0
        while True:
            answer = self.call("GET", f"/jobs/{self.account}/{job_id}/executions?page={page}&size=100", 200)
            results += answer["results"]
            if len(results) >= answer["totalSize"] or not answer["results"]:
                return results
            page += 1

    def events(self, job_id: str, execution_id: str) -> list[dict]:
        path = f"/jobs/{self.account}/{job_id}/executions/{execution_id}/events?size=1000"
        return self.call("GET", path, 200)["results"]

    def close(self) -> None:
        """Close the sessions of every thread."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


@dataclass
class ApiRun:
    """One execution: client-side times (perf_counter s, epoch ms) and its final record."""

    execution_id: str | None = None
    status: str | None = None
    seconds: float | None = None       # POST start sent -> final status seen
    post_epoch_ms: float = 0.0
    seen_epoch_ms: float | None = None
    document: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)   # from the events (sequential phase only)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == "SUCCESS"

    def split(self) -> dict[str, float | None]:
        """accept/queue/run/seen in ms (None where the record lacks a time)."""
        doc = self.document
        timers = doc.get("timers") or []
        created = doc.get("created_time")
        claim = timers[0].get("start") if timers else None
        end = timers[0].get("end") if timers else None
        return {
            "accept_ms": created - self.post_epoch_ms if created is not None else None,
            "queue_ms": claim - created if claim is not None and created is not None else None,
            "run_ms": end - claim if end is not None and claim is not None else None,
            "seen_ms": self.seen_epoch_ms - end if end is not None and self.seen_epoch_ms is not None else None,
        }


def parse_created(value: str | None) -> float | None:
    """An event's `created` (ISO 8601 from ansible-runner; UTC when it names no zone) as epoch ms."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp() * 1000.0


def event_phases(run: ApiRun, events: list[dict]) -> dict[str, float | None]:
    """Inside the worker's attempt: before the first ansible event, ansible, after the last one."""
    timers = run.document.get("timers") or []
    times = [t for t in (parse_created(e.get("created")) for e in events) if t is not None]
    if not timers or not times or timers[0].get("end") is None:
        return {}
    claim, end = timers[0]["start"], timers[0]["end"]
    return {"before_ansible_ms": min(times) - claim, "ansible_ms": max(times) - min(times),
            "after_ansible_ms": end - max(times), "events": len(events)}


def api_sequential_run(api: Api, job_id: str, poll: float, timeout: float, with_events: bool) -> ApiRun:
    run = ApiRun()
    start = time.perf_counter()
    run.post_epoch_ms = now_ms()
    try:
        started = api.start(job_id)
        run.execution_id = started["execution_id"]
        deadline = start + timeout
        while True:
            document = api.execution(job_id, run.execution_id)
            if document["status"] in FINAL:
                run.seconds = time.perf_counter() - start
                run.seen_epoch_ms = now_ms()
                run.status, run.document = document["status"], document
                break
            if time.perf_counter() > deadline:
                run.status, run.document = document["status"], document
                run.error = f"still {document['status']} after {timeout:g} s"
                return run
            time.sleep(poll)
        if with_events:
            run.phases = event_phases(run, api.events(job_id, run.execution_id))
    except ApiError as exc:
        run.error = str(exc)
    return run


def api_burst(api: Api, job_id: str, count: int, poll: float, timeout: float,
              fresh_connections: bool = False) -> tuple[float | None, list[ApiRun]]:
    """Start `count` executions at once; the wall time until all are seen final (one list per poll).

    Each POST goes from a thread of its own, on a keep-alive connection that thread opened before
    the burst (a GET of the job), unless `fresh_connections`: then the POSTs open their connections
    at once, which local mode's listen backlog of 5 does not always take (connection resets).
    """
    runs = [ApiRun() for _ in range(count)]
    released: list[float] = []   # when the last thread reached the barrier: the burst's start
    barrier = threading.Barrier(count, action=lambda: released.append(time.perf_counter()))

    def start_one(run: ApiRun) -> None:
        if not fresh_connections:
            try:
                api.call("GET", f"/jobs/{api.account}/{job_id}", 200)
            except ApiError as exc:
                run.error = str(exc)
        try:
            barrier.wait(timeout=timeout)
        except threading.BrokenBarrierError:
            run.error = run.error or "the burst's threads did not all get ready"
        if run.error:
            return
        run.post_epoch_ms = now_ms()
        try:
            run.execution_id = api.start(job_id)["execution_id"]
        except ApiError as exc:
            run.error = str(exc)

    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(start_one, runs))
    if not released:
        return None, runs
    start = released[0]
    posted = time.perf_counter() - start
    log(f"burst: {count} POSTs answered in {posted:.2f} s")
    by_id = {run.execution_id: run for run in runs if run.execution_id}
    pending = set(by_id)
    deadline = start + timeout
    wall = None
    try:
        while pending:
            for document in api.executions(job_id):
                run = by_id.get(document["execution_id"])
                if run is not None and run.execution_id in pending and document["status"] in FINAL:
                    run.seconds = time.perf_counter() - start
                    run.seen_epoch_ms = now_ms()
                    run.status = document["status"]
                    pending.discard(run.execution_id)
            if not pending:
                wall = time.perf_counter() - start
                break
            if time.perf_counter() > deadline:
                for execution_id in pending:
                    by_id[execution_id].error = f"not final after {timeout:g} s"
                break
            time.sleep(poll)
        # The records as a consistent read has them (timers, created_time), after the timing.
        for run in by_id.values():
            document = api.execution(job_id, run.execution_id)
            run.document = document
            if run.status is None:
                run.status = document["status"]
    except ApiError as exc:
        for run in runs:
            if run.error is None and run.status is None:
                run.error = str(exc)
    if any(run.error for run in runs):
        wall = None
    return wall, runs


# --------------------------------------------------------------------------- figures

def split_medians(runs: list[ApiRun]) -> dict[str, float | None]:
    splits = [run.split() for run in runs if run.ok]
    keys = ("accept_ms", "queue_ms", "run_ms", "seen_ms")
    figures = {key: rnd(median([s[key] for s in splits]), 1) for key in keys}
    phases = [run.phases for run in runs if run.ok and run.phases]
    for key in ("before_ansible_ms", "ansible_ms", "after_ansible_ms"):
        if phases:
            figures[key] = rnd(median([p[key] for p in phases]), 1)
    return figures


def utilisation(runs: list[ApiRun], workers: int) -> dict[str, float | None]:
    """How busy the worker slots were between the first claim and the last end of a burst:
    sum of the attempts' run times / (workers x that span); idle slots lower it."""
    spans = [(t[0]["start"], t[0]["end"]) for t in ((run.document.get("timers") or []) for run in runs if run.ok)
             if t and t[0].get("start") is not None and t[0].get("end") is not None]
    if not spans:
        return {"busy": None, "span_ms": None}
    span = max(end for _, end in spans) - min(start for start, _ in spans)
    busy = sum(end - start for start, end in spans) / (workers * span) if span > 0 else None
    return {"busy": rnd(busy), "span_ms": rnd(span, 0)}


def failures_of(api_runs: list[ApiRun], bare_runs: list[BareRun], phase: str) -> list[dict]:
    failures = [{"phase": phase, "kind": "api", "execution_id": run.execution_id, "status": run.status,
                 "detail": run.error or (run.document or {}).get("status_reason")}
                for run in api_runs if not run.ok]
    failures += [{"phase": phase, "kind": "bare", "detail": run.detail} for run in bare_runs if not run.ok]
    return failures


def warmup_phase(api: Api, job_id: str, checkout: Path, args: argparse.Namespace) -> dict:
    """Unrecorded warm-up: one execution per worker process at once (each worker builds its AWS
    clients on its first message, which costs ~0.5 s), and one bare run, --warmup times."""
    env = bare_environment()
    api_runs: list[ApiRun] = []
    bare_runs: list[BareRun] = []
    for _ in range(args.warmup):
        wall, runs = api_burst(api, job_id, args.workers, args.burst_poll, args.burst_timeout)
        api_runs += runs
        bare_runs.append(bare_run(checkout, env, args.run_timeout))
        log(f"warm-up: {args.workers} executions at once in {wall if wall is not None else float('nan'):.2f} s "
            f"{[run.status or run.error for run in runs]}, bare {bare_runs[-1].seconds:.3f} s")
    return {"rounds": args.warmup, "executions": len(api_runs),
            "split_median_ms": split_medians(api_runs) if api_runs else {},
            "failures": failures_of(api_runs, bare_runs, "warm-up")}


def sequential_phase(api: Api, job_id: str, checkout: Path, args: argparse.Namespace) -> dict:
    env = bare_environment()
    api_runs: list[ApiRun] = []
    bare_runs: list[BareRun] = []
    for index in range(args.runs):
        api_runs.append(api_sequential_run(api, job_id, args.poll, args.run_timeout, with_events=True))
        bare_runs.append(bare_run(checkout, env, args.run_timeout))
        a, b = api_runs[-1], bare_runs[-1]
        log(f"sequential {index + 1}/{args.runs}: API {a.seconds or float('nan'):.3f} s ({a.status or a.error}) "
            f"{ {k: rnd(v, 0) for k, v in a.split().items()} }, bare {b.seconds:.3f} s")
    api_s = [run.seconds for run in api_runs if run.ok]
    bare_s = [run.seconds for run in bare_runs if run.ok]
    api_median, bare_median = median(api_s), median(bare_s)
    overhead = api_median - bare_median if api_median is not None and bare_median is not None else None
    return {
        "runs": args.runs, "poll_s": args.poll,
        "api_s": [rnd(v) for v in api_s], "bare_s": [rnd(v) for v in bare_s],
        "api_median_s": rnd(api_median), "bare_median_s": rnd(bare_median),
        "api_min_s": rnd(min(api_s)) if api_s else None, "api_max_s": rnd(max(api_s)) if api_s else None,
        "bare_min_s": rnd(min(bare_s)) if bare_s else None, "bare_max_s": rnd(max(bare_s)) if bare_s else None,
        "overhead_s": rnd(overhead),
        "ratio": rnd(api_median / bare_median) if api_median and bare_median else None,
        "split_median_ms": split_medians(api_runs),
        "failures": failures_of(api_runs, bare_runs, "sequential"),
    }


def burst_phase(api: Api, job_id: str, checkout: Path, args: argparse.Namespace) -> dict:
    wall, api_runs = api_burst(api, job_id, args.burst, args.burst_poll, args.burst_timeout,
                               fresh_connections=args.fresh_connections)
    log(f"burst: API wall {wall if wall is not None else float('nan'):.2f} s")
    env = bare_environment()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        start = time.perf_counter()
        bare_runs = list(pool.map(lambda _: bare_run(checkout, env, args.run_timeout), range(args.burst)))
        bare_wall = time.perf_counter() - start
    if not all(run.ok for run in bare_runs):
        bare_wall_ok = None
    else:
        bare_wall_ok = bare_wall
    log(f"burst: bare wall {bare_wall:.2f} s ({args.workers}-wide)")
    api_tp = args.burst / wall if wall else None
    bare_tp = args.burst / bare_wall_ok if bare_wall_ok else None
    finish_s = sorted(run.seconds for run in api_runs if run.ok and run.seconds is not None)
    return {
        "executions": args.burst, "parallelism": args.workers, "poll_s": args.burst_poll,
        "fresh_connections": args.fresh_connections,
        "api_wall_s": rnd(wall), "bare_wall_s": rnd(bare_wall_ok),
        "api_per_s": rnd(api_tp), "bare_per_s": rnd(bare_tp),
        "throughput_ratio": rnd(api_tp / bare_tp) if api_tp and bare_tp else None,
        "api_first_done_s": rnd(finish_s[0]) if finish_s else None,
        "bare_run_median_s": rnd(median([run.seconds for run in bare_runs if run.ok])),
        "split_median_ms": split_medians(api_runs),
        "workers_busy": utilisation(api_runs, args.workers)["busy"],
        "failures": failures_of(api_runs, bare_runs, "burst"),
    }


def targets(sequential: dict, burst: dict | None) -> list[dict]:
    found: list[dict] = []
    overhead = sequential.get("overhead_s")
    found.append({"target": f"overhead per execution <= {OVERHEAD_TARGET_S:.1f} s",
                  "measured": f"{overhead:.3f} s" if overhead is not None else "n/a",
                  "result": "n/a" if overhead is None else ("PASS" if overhead <= OVERHEAD_TARGET_S else "FAIL")})
    if burst is not None:
        ratio = burst.get("throughput_ratio")
        found.append({"target": f"burst throughput API/bare >= {THROUGHPUT_TARGET}",
                      "measured": f"{ratio:.2f}" if ratio is not None else "n/a",
                      "result": "n/a" if ratio is None else ("PASS" if ratio >= THROUGHPUT_TARGET else "FAIL")})
    return found


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def print_split(split: dict, out) -> None:
    print(f"  where the API's time goes (medians): accept {ms(split.get('accept_ms'))}, "
          f"queue {ms(split.get('queue_ms'))} (created_time -> timers[0].start), "
          f"run {ms(split.get('run_ms'))} (timers[0].start -> end), "
          f"seen {ms(split.get('seen_ms'))} (end -> poll saw it)", file=out)
    if "ansible_ms" in split:
        print(f"    inside run: before the first ansible event {ms(split.get('before_ansible_ms'))} "
              f"(claim, clone, inventory, ansible-runner start), ansible events {ms(split.get('ansible_ms'))}, "
              f"after the last event {ms(split.get('after_ansible_ms'))} (result, event writes)", file=out)


def print_report(report: dict, out=sys.stdout) -> None:
    seq = report["sequential"]
    print(f"Execution overhead, {PLAYBOOK} (1 debug task, localhost), {report['workers']} local workers, "
          f"{os.cpu_count()} CPUs", file=out)
    warmup = report.get("warmup")
    if warmup:
        split = warmup["split_median_ms"]
        print(f"\nWarm-up (not counted): {warmup['executions']} executions, one per worker process, started at once"
              f"\n  cold workers, medians: queue {ms(split.get('queue_ms'))}, run {ms(split.get('run_ms'))}", file=out)
    print(f"\nSequential: {seq['runs']} API runs interleaved with {seq['runs']} bare runs "
          f"(poll every {seq['poll_s'] * 1000:.0f} ms)", file=out)
    print(f"  API  POST start -> SUCCESS seen   median {secs(seq['api_median_s'])}  "
          f"(min {secs(seq['api_min_s'])}, max {secs(seq['api_max_s'])})", file=out)
    print(f"  bare ansible-playbook            median {secs(seq['bare_median_s'])}  "
          f"(min {secs(seq['bare_min_s'])}, max {secs(seq['bare_max_s'])})", file=out)
    print(f"  overhead per execution           {secs(seq['overhead_s'])}   "
          f"ratio API/bare {seq['ratio'] if seq['ratio'] is not None else 'n/a'}x", file=out)
    print_split(seq["split_median_ms"], out)
    burst = report.get("burst")
    if burst is not None:
        print(f"\nBurst: {burst['executions']} executions started at once vs {burst['executions']} bare runs "
              f"{burst['parallelism']}-wide (poll every {burst['poll_s'] * 1000:.0f} ms; POSTs on "
              f"{'fresh connections' if burst['fresh_connections'] else 'connections opened before'})", file=out)
        print(f"  API  wall {secs(burst['api_wall_s'])}  ({burst['api_per_s'] or 'n/a'} executions/s; "
              f"first seen done after {secs(burst['api_first_done_s'])})", file=out)
        print(f"  bare wall {secs(burst['bare_wall_s'])}  ({burst['bare_per_s'] or 'n/a'} runs/s; "
              f"median run {secs(burst['bare_run_median_s'])})", file=out)
        print(f"  throughput API/bare {burst['throughput_ratio'] if burst['throughput_ratio'] is not None else 'n/a'}"
              f"   workers busy {burst['workers_busy'] if burst['workers_busy'] is not None else 'n/a'} "
              f"(sum of run / ({burst['parallelism']} x first claim -> last end))", file=out)
        print_split(burst["split_median_ms"], out)
    if report["failures"]:
        print(f"\nFailures ({len(report['failures'])}):", file=out)
        for failure in report["failures"][:20]:
            print(f"  {failure}", file=out)
    print("\nSummary:", file=out)
    for target in report["targets"]:
        print(f"  {target['result']:4}  {target['target']:42}  measured {target['measured']}", file=out)


# --------------------------------------------------------------------------- main

def default_workers() -> int:
    try:
        return max(1, int(os.environ.get("RUNNER_LOCAL_WORKERS", "4")))
    except ValueError:
        return 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="sequential runs of each kind (default 10)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="unrecorded warm-up rounds: --workers executions at once + 1 bare run (default 1)")
    parser.add_argument("--burst", type=int, default=20, help="executions in the burst (default 20; 0: no burst)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="local mode's worker processes = the bare burst's parallelism "
                             "(default ${RUNNER_LOCAL_WORKERS:-4})")
    parser.add_argument("--poll", type=float, default=0.02, help="sequential poll interval, s (default 0.02)")
    parser.add_argument("--burst-poll", type=float, default=0.02,
                        help="burst poll interval (one list request per poll), s (default 0.02)")
    parser.add_argument("--fresh-connections", action="store_true",
                        help="burst POSTs open their connections at once (default: each thread opens its "
                             "keep-alive connection before the burst)")
    parser.add_argument("--run-timeout", type=float, default=120.0, help="seconds one run may take")
    parser.add_argument("--burst-timeout", type=float, default=300.0, help="seconds the API burst may take")
    parser.add_argument("--base-url", help="a running local mode on this host (default: start one here)")
    parser.add_argument("--token", help="its bearer token (with --base-url)")
    parser.add_argument("--account", help="account alias (default: the token's)")
    parser.add_argument("--startup-timeout", type=float, default=90.0, help="seconds to wait for local mode")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.burst < 0 or args.workers < 1 or args.warmup < 0:
        parser.error("--runs and --workers must be at least 1, --burst and --warmup at least 0")
    if bool(args.base_url) != bool(args.token):
        parser.error("--base-url and --token go together")

    work = Path(tempfile.mkdtemp(prefix="runner-overhead-"))
    server = None
    api = None
    try:
        repo, checkout = make_repository(work)
        if args.base_url:
            base_url, token = args.base_url, args.token
            account = args.account or account_of_token(token)
        else:
            os.environ["RUNNER_LOCAL_WORKERS"] = str(args.workers)
            server = LocalMode(args.startup_timeout)
            started = server.start()
            base_url, token = started["baseUrl"], started["bearerToken"]
            account = args.account or started.get("accountAlias") or account_of_token(token)
        if not account:
            raise RuntimeError("no account alias: pass --account")
        api = Api(base_url, token, account, timeout=30.0)
        warmup_job = api.create_job(repo, "overhead bench: warm-up") if args.warmup else None
        sequential_job = api.create_job(repo, "overhead bench: sequential")
        burst_job = api.create_job(repo, "overhead bench: burst") if args.burst else None
        start = time.perf_counter()
        warmup = warmup_phase(api, warmup_job, checkout, args) if warmup_job else None
        sequential = sequential_phase(api, sequential_job, checkout, args)
        burst = burst_phase(api, burst_job, checkout, args) if burst_job else None
        seconds = time.perf_counter() - start
    except (RuntimeError, ApiError, subprocess.CalledProcessError) as exc:
        log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if api is not None:
            api.close()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    failures = (warmup["failures"] if warmup else []) + sequential["failures"] + (burst["failures"] if burst else [])
    report = {"baseUrl": base_url, "account": account, "workers": args.workers, "cpus": os.cpu_count(),
              "seconds": round(seconds, 1), "api_requests": api.requests,
              "warmup": warmup, "sequential": sequential, "burst": burst, "failures": failures,
              "targets": targets(sequential, burst)}
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_report(report)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
