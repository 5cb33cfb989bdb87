#!/usr/bin/env python3
"""Lateness of local mode's schedule fires: scheduled time versus the execution's creation.

    .venv/bin/python bench/schedule_lateness.py                # 20 date schedules + 2 cron minutes
    .venv/bin/python bench/schedule_lateness.py --dates 40 --spread 30 --cron-minutes 0 --json
    .venv/bin/python bench/schedule_lateness.py --dates 2 --spread 1 --cron-minutes 0   # quickest

Starts local mode (common.LocalMode), creates a job (a 1-task playbook in a temporary git
repository) and a service account with the bootstrap user's credentials, then:
- --dates one-time schedules, their fire times spread over --spread seconds from 8 s ahead
  (several share a second: fires that coincide are the harder case);
- one `* * * * *` schedule left to fire for --cron-minutes minutes.
Each fire starts an execution whose `scheduled_time` is the fire time and whose `created_time` is
when the trigger created it; lateness = created_time - scheduled_time (same host, same clock).
Reported: count, median, p95, p99 and max lateness in ms (common.percentile: linear
interpolation), per kind, and whether every fire ran exactly once. Target: every fire within
1000 ms. The wait is fixed (until 5 s after the last fire is due), so the benchmark always ends.
A FAIL does not change the exit code; 1 means a fire was missed or doubled, 2 that the benchmark
could not run (local mode did not start, or the API refused a request it needs).
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from common import (Credentials, Jobs, add_standard_arguments, debug_playbook, file_url, job_spec, log,
                    make_repository, on_local_mode, print_summary, run_benchmark, scratch_directory, summarize)

TARGET_MS = 1000
KINDS = ("date", "cron", "all")


def iso(moment: datetime) -> str:
    """A UTC time as a date trigger's expression."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def measure(local: Credentials, dates: int, spread: float, cron_minutes: int) -> dict[str, Any]:
    """Create the schedules, wait for their fires, and answer the lateness per kind."""
    with local.client() as client, scratch_directory("runner-sched-repo-") as work:
        jobs = Jobs(client, local.account)
        repo = make_repository(work, {"site.yml": debug_playbook(1)})
        job_id = jobs.create(job_spec(file_url(repo), "site.yml", host_vars={"ansible_connection": "local"}))
        client.call("POST", f"/serviceAccounts/{local.account}",
                    {"alias": "bench", "username": local.username, "password": local.password})
        schedules = f"/jobs/{local.account}/{job_id}/schedules"
        start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=8)
        kinds: dict[str, str] = {}
        for index in range(dates):
            when = start + timedelta(seconds=int(index * spread / max(1, dates)))
            made = client.call("POST", schedules, {"serviceAccountAlias": "bench",
                                                   "trigger": {"type": "date", "expression": iso(when)}})
            kinds[made["id"]] = "date"
        last = start + timedelta(seconds=spread)
        cron_id = None
        if cron_minutes:
            made = client.call("POST", schedules, {"serviceAccountAlias": "bench",
                                                   "trigger": {"type": "cron", "expression": "* * * * *"}})
            cron_id = made["id"]
            kinds[cron_id] = "cron"
            first = datetime.strptime(made["nextRuns"][0], "%Y-%m-%dT%H:%M:%S%z")
            last = max(last, first + timedelta(minutes=cron_minutes - 1))
        wait = (last - datetime.now(timezone.utc)).total_seconds() + 5
        log(f"created {len(kinds)} schedules; waiting {wait:.0f} s for their fires")
        time.sleep(max(0.0, wait))
        if cron_id is not None:
            client.call("DELETE", f"{schedules}/{cron_id}")
        executions = jobs.executions(job_id)
    lateness: dict[str, list[float]] = {"date": [], "cron": []}
    fires: dict[tuple[str, int], int] = {}
    for execution in executions:
        key = (execution["started_by"], execution["scheduled_time"])
        fires[key] = fires.get(key, 0) + 1
        lateness.setdefault(kinds.get(execution["started_by"], "other"), []).append(
            execution["created_time"] - execution["scheduled_time"])
    doubled = sum(1 for count in fires.values() if count > 1)
    missed = dates - len(lateness["date"]) + (cron_minutes - len(lateness["cron"]) if cron_minutes else 0)
    every = lateness["date"] + lateness["cron"]
    return {"date": summarize(lateness["date"]), "cron": summarize(lateness["cron"]), "all": summarize(every),
            "missed": max(0, missed), "doubled": doubled, "target_met": bool(every) and max(every) <= TARGET_MS}


def document(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: per kind count, median_ms, p95_ms, p99_ms, max_ms ({"count": 0} without fires)."""
    return {key: (value.as_dict("ms") if value else {"count": 0}) if key in KINDS else value
            for key, value in result.items()}


def print_text(result: dict[str, Any]) -> None:
    """The text report."""
    for kind in KINDS:
        if result[kind] is not None:
            print_summary(f"{kind:5} fires lateness", result[kind])
    print(f"missed {result['missed']}, doubled {result['doubled']}; target every fire <= {TARGET_MS} ms: "
          f"{'PASS' if result['target_met'] else 'FAIL'}")


def exit_code(result: dict[str, Any]) -> int:
    """1 when a fire was missed or doubled, else 0."""
    return 1 if result["missed"] or result["doubled"] else 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=20, help="one-time schedules (default 20)")
    parser.add_argument("--spread", type=float, default=20.0, help="seconds the date fires spread over")
    parser.add_argument("--cron-minutes", type=int, default=2, help="minutes a cron schedule fires (default 2)")
    add_standard_arguments(parser, startup_timeout=120.0)
    args = parser.parse_args(argv)
    if args.dates < 0 or args.cron_minutes < 0 or args.spread < 0 or not (args.dates or args.cron_minutes):
        parser.error("--dates, --spread and --cron-minutes must not be negative, and one schedule is needed")
    return run_benchmark(
        lambda: on_local_mode(args.startup_timeout,
                              lambda local: measure(local, args.dates, args.spread, args.cron_minutes)),
        args.json, print_text, exit_code, document)

if __name__ == "__main__":
    sys.exit(main())
