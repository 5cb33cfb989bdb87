#!/usr/bin/env python3
"""A deep queue: N executions of a one-task playbook started at once, at the account's concurrency.

    .venv/bin/python bench/queue_depth.py                 # 200 executions, 4 workers, concurrency 4
    .venv/bin/python bench/queue_depth.py --executions 40 --json

Local mode starts here (fresh state, --workers worker processes, the account's run slots at
--concurrency). The executions are started one after the other, as fast as the API answers, then
waited for. Reported, and judged:

- every one ended SUCCESS;
- they started in the order they were submitted: each execution's start (its timer's start) is
  ranked among all the starts; with first-in-first-out slots its rank differs from its submission
  index by less than --concurrency (slots granted at the same moment reach the workers in any order);
- a waiting execution costs what a running one costs: the state transitions (states entered) and
  the history events of each execution's workflow, read from the emulator's Step Functions
  history, are the same for the first and the last (and their spread over all is printed);
- at most --concurrency ran at any instant (from the timers).

Timings (how long the queue took to drain, how long the last one waited) are printed, not judged.
Exit code 1 when an execution did not end SUCCESS, 2 when the benchmark could not start.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

import boto3

from common import (Client, Deadline, Jobs, LocalMode, add_standard_arguments, debug_playbook, file_url, job_spec, log,
                    make_repository, run_benchmark, scratch_directory)

PLAYBOOK = "hello.yml"


def emulator_client(state_dir: Path, service: str) -> Any:
    """A client of local mode's emulator, with the credentials it accepts (its emulator.json)."""
    emulator = json.loads((state_dir / "emulator.json").read_text(encoding="utf-8"))
    environment = emulator["environment"]
    return boto3.client(service, endpoint_url=emulator["endpoint"], region_name=environment["AWS_REGION"],
                        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
                        aws_session_token=environment.get("AWS_SESSION_TOKEN"))


def workflow_cost(sfn: Any, machine_arn: str, execution_id: str) -> dict[str, int]:
    """States entered and history events of the execution's first-attempt workflow."""
    arn = machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{execution_id}-1"
    events: list[dict] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
        events += page["events"]
    return {"transitions": sum(1 for event in events if "stateEnteredEventDetails" in event), "events": len(events)}


def most_at_once(timers: list[dict]) -> int:
    moments = sorted([(timer["start"], 1) for timer in timers] + [(timer["end"], -1) for timer in timers])
    most = current = 0
    for _, step in moments:
        current += step
        most = max(most, current)
    return most


def measure(args: argparse.Namespace) -> dict:
    with ExitStack() as cleanup:
        work = cleanup.enter_context(scratch_directory("runner-queue-"))
        repo = make_repository(work, {PLAYBOOK: debug_playbook(1)})
        local = LocalMode(args.startup_timeout, env={"RUNNER_LOCAL_WORKERS": str(args.workers),
                                                     "RUNNER_MAX_CONCURRENT_PER_ACCOUNT": str(args.concurrency)})
        credentials = cleanup.enter_context(local)
        client = cleanup.enter_context(Client(credentials.base_url, credentials.token, timeout=60.0))
        jobs = Jobs(client, credentials.account)
        # A TTL that fits in a Lambda invocation: the Lambda path (bench/overhead.py says why).
        job_id = jobs.create(job_spec(file_url(repo), PLAYBOOK, description="queue depth bench", executionTtl=10))
        started = time.perf_counter()
        ids = [jobs.start(job_id) for _ in range(args.executions)]
        submitted_s = time.perf_counter() - started
        log(f"{len(ids)} executions started in {submitted_s:.1f} s; waiting for them")
        deadline = Deadline(args.timeout, "the queue to drain")
        final: dict[str, dict] = {}
        while len(final) < len(ids) and not deadline.expired:
            for execution in jobs.executions(job_id):
                if execution["status"] in ("SUCCESS", "FAILURE", "INIT_FAILURE", "STOPPED", "KILLED"):
                    final[execution["execution_id"]] = execution
            time.sleep(1.0)
        drained_s = time.perf_counter() - started
        ordered = [final.get(execution_id) for execution_id in ids]
        done = [execution for execution in ordered if execution is not None]
        timers = [execution["timers"][0] for execution in done if execution["timers"]]
        starts = {execution["execution_id"]: execution["timers"][0]["start"] for execution in done if execution["timers"]}
        rank = {execution_id: index for index, execution_id in enumerate(sorted(starts, key=starts.get))}
        displacement = [abs(rank[execution_id] - index) for index, execution_id in enumerate(ids) if execution_id in rank]
        sfn = emulator_client(local.state_dir, "stepfunctions")
        machine = json.loads((local.state_dir / "emulator.json").read_text())["environment"][
            "RUNNER_EXECUTION_STATE_MACHINE_ARN"]
        costs = [workflow_cost(sfn, machine, execution_id) for execution_id in ids]
        last = done[-1] if done else None
        return {
            "executions": args.executions, "workers": args.workers, "concurrency": args.concurrency,
            "submitted_s": round(submitted_s, 1), "drained_s": round(drained_s, 1),
            "statuses": {status: sum(1 for e in done if e["status"] == status) for status in {e["status"] for e in done}},
            "unfinished": len(ids) - len(done),
            "max_displacement": max(displacement) if displacement else None,
            "most_at_once": most_at_once(timers) if timers else None,
            "last_waited_s": round((last["timers"][0]["start"] - last["created_time"]) / 1000, 1)
            if last and last["timers"] else None,
            "first_cost": costs[0], "last_cost": costs[-1],
            "transitions_range": [min(c["transitions"] for c in costs), max(c["transitions"] for c in costs)],
            "events_range": [min(c["events"] for c in costs), max(c["events"] for c in costs)],
        }


def verdicts(report: dict) -> list[tuple[str, bool, str]]:
    n = report["executions"]
    return [
        (f"all {n} end SUCCESS", report["statuses"].get("SUCCESS") == n, json.dumps(report["statuses"])),
        (f"started in submission order (rank off by < {report['concurrency']})",
         report["max_displacement"] is not None and report["max_displacement"] < report["concurrency"],
         f"max displacement {report['max_displacement']}"),
        (f"at most {report['concurrency']} running at once", (report["most_at_once"] or 0) <= report["concurrency"],
         str(report["most_at_once"])),
        ("state transitions of the 1st = of the last", report["first_cost"] == report["last_cost"],
         f"1st {report['first_cost']}, last {report['last_cost']}"),
    ]


def print_report(report: dict, out: TextIO = sys.stdout) -> None:
    print(f"Queue of {report['executions']} executions ({PLAYBOOK}: 1 debug task), {report['workers']} workers, "
          f"concurrency {report['concurrency']}", file=out)
    print(f"  submitted in {report['submitted_s']} s, all ended after {report['drained_s']} s; "
          f"the last waited {report['last_waited_s']} s for its start", file=out)
    print(f"  per workflow: states entered {report['transitions_range'][0]}..{report['transitions_range'][1]}, "
          f"history events {report['events_range'][0]}..{report['events_range'][1]} over all executions", file=out)
    print("\nSummary:", file=out)
    for target, ok, measured in verdicts(report):
        print(f"  {'PASS' if ok else 'FAIL'}  {target:52}  measured {measured}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds the queue may take to drain")
    add_standard_arguments(parser, startup_timeout=90.0)
    args = parser.parse_args(argv)
    if args.executions < 1 or args.workers < 1 or args.concurrency < 1:
        parser.error("--executions, --workers and --concurrency must be at least 1")
    return run_benchmark(lambda: measure(args), args.json, print_report,
                         lambda report: 0 if report["statuses"].get("SUCCESS") == report["executions"] else 1)


if __name__ == "__main__":
    sys.exit(main())
