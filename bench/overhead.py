#!/usr/bin/env python3
"""Execution overhead benchmark: a 1-task playbook through the API versus bare ansible-playbook.

    .venv/bin/python bench/overhead.py                  # start local mode here, 10 + 20 runs
    .venv/bin/python bench/overhead.py --json
    .venv/bin/python bench/overhead.py --runs 5 --burst 8 --workers 2
    .venv/bin/python bench/overhead.py --runs 1 --burst 2 --warmup 0 --workers 1    # quickest

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
   connection its thread opened before; --fresh-connections: connect at once too, so that the
   server's accept backlog is measured as well), timed until all are seen SUCCESS (one list
   request per poll); versus --burst bare runs on a pool as wide as local mode's worker processes
   (--workers, default ${RUNNER_LOCAL_WORKERS:-4}). Reported: both wall times and API throughput /
   bare throughput (target >= 0.9), and the handoff gap: from a run's end to the claim of the next
   run that had waited (median; target <= 150 ms).

Where the API's time goes, from each execution's own record (same host, so epoch clocks agree):
  accept  = created_time - the client's POST      (the start request, until the record exists)
  queue   = timers[0].start - created_time        (Step Functions + SQS + waiting for a worker)
  run     = timers[0].end - timers[0].start       (the worker's attempt: clone, ansible, writes)
  seen    = when the poll saw it final - timers[0].end   (the polling's resolution)
and, inside `run` (sequential phase, from the execution's events): before the first ansible event
(claim, git clone, inventory, ansible-runner start-up), ansible's own events, after the last one.

Every wait has a deadline: a run (API or bare) --run-timeout, the burst --burst-timeout; a run
past it counts as failed (printed under Failures) and the benchmark goes on to its report. Medians
and percentiles are common.percentile's (linear interpolation).

The server: local mode started here (common.LocalMode: `python -m localmode`, fresh
RUNNER_STATE_DIR, free RUNNER_PORT, RUNNER_LOCAL_WORKERS=--workers), stopped with SIGINT at the
end; or --base-url and --token of a running one on this host (it must see the file:// repository;
pass --workers). Targets are a measurement: a FAIL does not change the exit code. The exit code is
1 when a run did not end SUCCESS (API or bare) or the API answered an error, 2 when the benchmark
could not start.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from common import (FINAL_STATUSES, VENV_BIN, ApiError, Client, Deadline, DeadlineMissed, Jobs, LocalMode,
                    account_of_token, add_standard_arguments, clone_repository, debug_playbook, event_epoch_ms,
                    file_url, job_spec, log, make_repository, median, now_ms, print_summary, run_benchmark,
                    scratch_directory, summarize)

PLAYBOOK = "hello.yml"
LAMBDA_TTL_MINUTES = 10
OVERHEAD_TARGET_S = 1.0
THROUGHPUT_TARGET = 0.9
HANDOFF_GAP_TARGET_MS = 150


def rnd(value: float | None, digits: int = 3) -> float | None:
    """round() that lets None through."""
    return None if value is None else round(value, digits)


# --------------------------------------------------------------------------- bare ansible-playbook

@dataclass
class BareRun:
    """One run of ansible-playbook without the API."""

    seconds: float
    ok: bool
    detail: str = ""


def bare_environment() -> dict[str, str]:
    """The environment of a bare run: the venv's ansible first on PATH, no colours, no retry files."""
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False"}


def bare_run(checkout: Path, env: dict[str, str], timeout: float) -> BareRun:
    """`ansible-playbook -i localhost, -c local hello.yml` in the checkout, timed (killed after `timeout`)."""
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
        """Whether it ended SUCCESS without a client-side error."""
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


def event_phases(run: ApiRun, events: list[dict]) -> dict[str, float | None]:
    """Inside the worker's attempt: before the first ansible event, ansible, after the last one."""
    timers = run.document.get("timers") or []
    times = [t for t in (event_epoch_ms(e.get("created")) for e in events) if t is not None]
    if not timers or not times or timers[0].get("end") is None:
        return {}
    claim, end = timers[0]["start"], timers[0]["end"]
    return {"before_ansible_ms": min(times) - claim, "ansible_ms": max(times) - min(times),
            "after_ansible_ms": end - max(times), "events": len(events)}


def api_sequential_run(jobs: Jobs, job_id: str, poll: float, timeout: float, with_events: bool) -> ApiRun:
    """Start one execution and poll it every `poll` s until final (at most `timeout` s)."""
    run = ApiRun()
    start = time.perf_counter()
    run.post_epoch_ms = now_ms()
    try:
        run.execution_id = jobs.start(job_id)
        document = jobs.wait_final(job_id, run.execution_id, timeout - (time.perf_counter() - start), poll)
        run.seconds = time.perf_counter() - start
        run.seen_epoch_ms = now_ms()
        run.status, run.document = document["status"], document
        if with_events:
            run.phases = event_phases(run, jobs.events(job_id, run.execution_id))
    except (ApiError, DeadlineMissed) as exc:
        run.error = str(exc)
    return run


def api_burst(jobs: Jobs, job_id: str, count: int, poll: float, timeout: float,
              fresh_connections: bool = False) -> tuple[float | None, list[ApiRun]]:
    """Start `count` executions at once; the wall time until all are seen final (one list per poll).

    Each POST goes from a thread of its own, on a keep-alive connection that thread opened before
    the burst (a GET of the job), unless `fresh_connections`: then the POSTs open their connections
    at once too, and the server's accept backlog is part of what is measured.
    """
    runs = [ApiRun() for _ in range(count)]
    released: list[float] = []   # when the last thread reached the barrier: the burst's start
    barrier = threading.Barrier(count, action=lambda: released.append(time.perf_counter()))

    def start_one(run: ApiRun) -> None:
        if not fresh_connections:
            try:
                jobs.get(job_id)
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
            run.execution_id = jobs.start(job_id)
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
    deadline = Deadline(timeout - posted, f"the burst of {count} (--burst-timeout {timeout:g} s)")
    wall = None
    try:
        while pending:
            for document in jobs.executions(job_id, seconds=max(1.0, deadline.remaining())):
                run = by_id.get(document["execution_id"])
                if run is not None and run.execution_id in pending and document["status"] in FINAL_STATUSES:
                    run.seconds = time.perf_counter() - start
                    run.seen_epoch_ms = now_ms()
                    run.status = document["status"]
                    pending.discard(run.execution_id)
            if not pending:
                wall = time.perf_counter() - start
                break
            if deadline.expired:
                log(f"FAILED: {deadline.what}: {len(pending)} executions not final after {timeout:g} s")
                for execution_id in pending:
                    by_id[execution_id].error = f"not final after {timeout:g} s"
                break
            time.sleep(poll)
        # The records as a consistent read has them (timers, created_time), after the timing.
        for run in by_id.values():
            document = jobs.execution(job_id, run.execution_id)
            run.document = document
            if run.status is None:
                run.status = document["status"]
    except (ApiError, DeadlineMissed) as exc:
        for run in runs:
            if run.error is None and run.status is None:
                run.error = str(exc)
    if any(run.error for run in runs):
        wall = None
    return wall, runs


# --------------------------------------------------------------------------- figures

def split_medians(runs: list[ApiRun]) -> dict[str, float | None]:
    """Medians of the successful runs' accept/queue/run/seen (and event phases where measured), in ms."""
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
    """The runs that did not succeed, as report entries."""
    failures = [{"phase": phase, "kind": "api", "execution_id": run.execution_id, "status": run.status,
                 "detail": run.error or (run.document or {}).get("status_reason")}
                for run in api_runs if not run.ok]
    failures += [{"phase": phase, "kind": "bare", "detail": run.detail} for run in bare_runs if not run.ok]
    return failures


def warmup_phase(jobs: Jobs, job_id: str, checkout: Path, args: argparse.Namespace) -> dict:
    """Unrecorded warm-up: one execution per worker process at once (each worker builds its AWS
    clients on its first message, which costs ~0.5 s), and one bare run, --warmup times."""
    env = bare_environment()
    api_runs: list[ApiRun] = []
    bare_runs: list[BareRun] = []
    for _ in range(args.warmup):
        wall, runs = api_burst(jobs, job_id, args.workers, args.burst_poll, args.burst_timeout)
        api_runs += runs
        bare_runs.append(bare_run(checkout, env, args.run_timeout))
        log(f"warm-up: {args.workers} executions at once in {wall if wall is not None else float('nan'):.2f} s "
            f"{[run.status or run.error for run in runs]}, bare {bare_runs[-1].seconds:.3f} s")
    return {"rounds": args.warmup, "executions": len(api_runs),
            "split_median_ms": split_medians(api_runs) if api_runs else {},
            "failures": failures_of(api_runs, bare_runs, "warm-up")}


def sequential_phase(jobs: Jobs, job_id: str, checkout: Path, args: argparse.Namespace) -> dict:
    """--runs API runs interleaved with --runs bare runs; their figures side by side."""
    env = bare_environment()
    api_runs: list[ApiRun] = []
    bare_runs: list[BareRun] = []
    for index in range(args.runs):
        api_runs.append(api_sequential_run(jobs, job_id, args.poll, args.run_timeout, with_events=True))
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


def handoff_gaps(runs: list[ApiRun]) -> list[float]:
    """From a run's end to the next waiter's start, in ms: for each run that started after some run
    had ended (it waited for a slot or a worker), its claim minus the last end before it."""
    spans = sorted((t[0]["start"], t[0]["end"]) for t in ((run.document.get("timers") or []) for run in runs
                   if run.ok) if t and t[0].get("start") is not None and t[0].get("end") is not None)
    ends = sorted(end for _, end in spans)
    gaps = []
    for start, _ in spans:
        before = [end for end in ends if end <= start]
        if before:
            gaps.append(start - before[-1])
    return gaps


def burst_phase(jobs: Jobs, job_id: str, checkout: Path, args: argparse.Namespace) -> dict:
    """--burst executions at once versus --burst bare runs --workers-wide: wall times, throughputs."""
    wall, api_runs = api_burst(jobs, job_id, args.burst, args.burst_poll, args.burst_timeout,
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
        "handoff_gap_median_ms": rnd(median(handoff_gaps(api_runs)), 0),
        "handoff_gaps": len(handoff_gaps(api_runs)),
        "failures": failures_of(api_runs, bare_runs, "burst"),
    }


def targets(sequential: dict, burst: dict | None) -> list[dict]:
    """PASS/FAIL of the overhead and throughput targets."""
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
        gap = burst.get("handoff_gap_median_ms")
        found.append({"target": f"handoff gap (run end -> next start) median <= {HANDOFF_GAP_TARGET_MS} ms",
                      "measured": ms(gap),
                      "result": "n/a" if gap is None else ("PASS" if gap <= HANDOFF_GAP_TARGET_MS else "FAIL")})
    return found


def ms(value: float | None) -> str:
    """A duration in ms for the report, or n/a."""
    return "n/a" if value is None else f"{value:.0f} ms"


def secs(value: float | None) -> str:
    """A duration in s for the report, or n/a."""
    return "n/a" if value is None else f"{value:.3f} s"


def print_split(split: dict, out: TextIO) -> None:
    """Where the API's time went (medians)."""
    print(f"  where the API's time goes (medians): accept {ms(split.get('accept_ms'))}, "
          f"queue {ms(split.get('queue_ms'))} (created_time -> timers[0].start), "
          f"run {ms(split.get('run_ms'))} (timers[0].start -> end), "
          f"seen {ms(split.get('seen_ms'))} (end -> poll saw it)", file=out)
    if "ansible_ms" in split:
        print(f"    inside run: before the first ansible event {ms(split.get('before_ansible_ms'))} "
              f"(claim, clone, inventory, ansible-runner start), ansible events {ms(split.get('ansible_ms'))}, "
              f"after the last event {ms(split.get('after_ansible_ms'))} (result, event writes)", file=out)


def print_report(report: dict, out: TextIO = sys.stdout) -> None:
    """The report as text."""
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
    print_summary("  API  POST start -> SUCCESS seen", summarize(seq["api_s"]), "s", 3, out)
    print_summary("  bare ansible-playbook          ", summarize(seq["bare_s"]), "s", 3, out)
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
        print(f"  handoff gap, a run's end -> the next waiter's claim: median {ms(burst['handoff_gap_median_ms'])} "
              f"over {burst['handoff_gaps']} handoffs", file=out)
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
    """${RUNNER_LOCAL_WORKERS:-4}: local mode's own default."""
    try:
        return max(1, int(os.environ.get("RUNNER_LOCAL_WORKERS", "4")))
    except ValueError:
        return 4


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit code."""
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
    add_standard_arguments(parser, startup_timeout=90.0)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.burst < 0 or args.workers < 1 or args.warmup < 0:
        parser.error("--runs and --workers must be at least 1, --burst and --warmup at least 0")
    if bool(args.base_url) != bool(args.token):
        parser.error("--base-url and --token go together")

    def measure() -> dict[str, Any]:
        """The phases, against local mode started here or --base-url's; the report."""
        with ExitStack() as cleanup:
            work = cleanup.enter_context(scratch_directory("runner-overhead-"))
            repo = make_repository(work, {PLAYBOOK: debug_playbook(1)})
            checkout = clone_repository(repo, work / "checkout")
            if args.base_url:
                base_url, token = args.base_url, args.token
                account = args.account or account_of_token(token)
            else:
                started = cleanup.enter_context(
                    LocalMode(args.startup_timeout, env={"RUNNER_LOCAL_WORKERS": str(args.workers)}))
                base_url, token, account = started.base_url, started.token, args.account or started.account
            if not account:
                raise RuntimeError("no account alias: pass --account")
            client = cleanup.enter_context(Client(base_url, token, timeout=30.0))
            jobs = Jobs(client, account)

            def create(description: str) -> str:
                # A TTL that fits in a Lambda invocation: the runs take the Lambda path (no TTL would
                # mean 180 minutes, a Fargate task per run: chalicelib/executions/placement.py).
                return jobs.create(job_spec(file_url(repo), PLAYBOOK, description=description,
                                            executionTtl=LAMBDA_TTL_MINUTES))
            warmup_job = create("overhead bench: warm-up") if args.warmup else None
            sequential_job = create("overhead bench: sequential")
            burst_job = create("overhead bench: burst") if args.burst else None
            start = time.perf_counter()
            warmup = warmup_phase(jobs, warmup_job, checkout, args) if warmup_job else None
            sequential = sequential_phase(jobs, sequential_job, checkout, args)
            burst = burst_phase(jobs, burst_job, checkout, args) if burst_job else None
            seconds = time.perf_counter() - start
        failures = ((warmup["failures"] if warmup else []) + sequential["failures"]
                    + (burst["failures"] if burst else []))
        return {"baseUrl": base_url, "account": account, "workers": args.workers, "cpus": os.cpu_count(),
                "seconds": round(seconds, 1), "api_requests": client.requests,
                "warmup": warmup, "sequential": sequential, "burst": burst, "failures": failures,
                "targets": targets(sequential, burst)}

    return run_benchmark(measure, args.json, print_report, lambda report: 1 if report["failures"] else 0)

if __name__ == "__main__":
    sys.exit(main())
