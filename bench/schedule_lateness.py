#!/usr/bin/env python3
"""Lateness of local mode's schedule fires: scheduled time versus the execution's creation.

    .venv/bin/python bench/schedule_lateness.py                # 20 date schedules + 2 cron minutes
    .venv/bin/python bench/schedule_lateness.py --dates 40 --spread 30 --cron-minutes 0 --json

Starts local mode (bench/api.py's LocalMode), creates a job (a 1-task playbook in a temporary git
repository) and a service account with the bootstrap user's credentials, then:
- --dates one-time schedules, their fire times spread over --spread seconds from 8 s ahead
  (several share a second: fires that coincide are the harder case);
- one `* * * * *` schedule left to fire for --cron-minutes minutes.
Each fire starts an execution whose `scheduled_time` is the fire time and whose `created_time` is
when the trigger created it; lateness = created_time - scheduled_time (same host, same clock).
Reported: count, median, p95 and max lateness in ms, per kind, and whether every fire ran exactly
once. Target: every fire within 1000 ms. A FAIL does not change the exit code; 1 means a fire was
missed or doubled, 2 that the benchmark could not start.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

from api import on_local_mode  # bench/api.py: a script's own directory comes first on sys.path

TARGET_MS = 1000


def make_repo() -> Path:
    path = Path(tempfile.mkdtemp(prefix="runner-sched-repo-"))
    (path / "site.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: hi\n")
    for args in (["init", "-q", "-b", "master"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args],
                       cwd=path, check=True, capture_output=True)
    return path


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def summary(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {"count": len(ordered), "median_ms": round(statistics.median(ordered)),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]), "max_ms": round(ordered[-1])}


def run(base_url: str, local: dict, dates: int, spread: float, cron_minutes: int) -> dict:
    api = requests.Session()
    api.trust_env = False
    api.headers["Authorization"] = f"Bearer {local['bearerToken']}"
    account = local["accountAlias"]
    repo = make_repo()
    job = api.post(f"{base_url}/jobs/{account}", json={
        "repository": {"url": f"file://{repo}", "defaultPlaybook": "site.yml"},
        "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}]}, timeout=30).json()[0]
    api.post(f"{base_url}/serviceAccounts/{account}", timeout=30, json={
        "alias": "bench", "username": local["username"], "password": local["password"]}).raise_for_status()
    schedules = f"{base_url}/jobs/{account}/{job['id']}/schedules"
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=8)
    kinds: dict[str, str] = {}
    for index in range(dates):
        when = start + timedelta(seconds=int(index * spread / max(1, dates)))
        made = api.post(schedules, timeout=30, json={"serviceAccountAlias": "bench",
                                                     "trigger": {"type": "date", "expression": iso(when)}})
        made.raise_for_status()
        kinds[made.json()["id"]] = "date"
    last = start + timedelta(seconds=spread)
    if cron_minutes:
        made = api.post(schedules, timeout=30, json={"serviceAccountAlias": "bench",
                                                     "trigger": {"type": "cron", "expression": "* * * * *"}})
        made.raise_for_status()
        cron_id = made.json()["id"]
        kinds[cron_id] = "cron"
        first = datetime.strptime(made.json()["nextRuns"][0], "%Y-%m-%dT%H:%M:%S%z")
        last = max(last, first + timedelta(minutes=cron_minutes - 1))
    wait = (last - datetime.now(timezone.utc)).total_seconds() + 5
    print(f"created {len(kinds)} schedules; waiting {wait:.0f} s for their fires", file=sys.stderr, flush=True)
    time.sleep(max(0.0, wait))
    if cron_minutes:
        api.delete(f"{schedules}/{cron_id}", timeout=30)
    executions = api.get(f"{base_url}/jobs/{account}/{job['id']}/executions", params={"size": 100}, timeout=30).json()
    lateness: dict[str, list[float]] = {"date": [], "cron": []}
    fires: dict[tuple[str, int], int] = {}
    for execution in executions["results"]:
        key = (execution["started_by"], execution["scheduled_time"])
        fires[key] = fires.get(key, 0) + 1
        lateness[kinds.get(execution["started_by"], "other")].append(execution["created_time"] - execution["scheduled_time"])
    doubled = sum(1 for count in fires.values() if count > 1)
    missed = dates - len(lateness["date"]) + (cron_minutes - len(lateness["cron"]) if cron_minutes else 0)
    every = lateness["date"] + lateness["cron"]
    return {"date": summary(lateness["date"]), "cron": summary(lateness["cron"]), "all": summary(every),
            "missed": max(0, missed), "doubled": doubled,
            "target_met": bool(every) and max(every) <= TARGET_MS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=20)
    parser.add_argument("--spread", type=float, default=20.0, help="seconds the date fires spread over")
    parser.add_argument("--cron-minutes", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    code, result = on_local_mode(args.startup_timeout, lambda local: run(local["baseUrl"], local, args.dates, args.spread, args.cron_minutes))
    if code:
        return code
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for kind in ("date", "cron", "all"):
            figures = result[kind]
            if figures["count"]:
                print(f"{kind:5} fires: {figures['count']:3}  lateness median {figures['median_ms']} ms, "
                      f"p95 {figures['p95_ms']} ms, max {figures['max_ms']} ms")
        print(f"missed {result['missed']}, doubled {result['doubled']}; target every fire <= {TARGET_MS} ms: "
              f"{'PASS' if result['target_met'] else 'FAIL'}")
    return 1 if result["missed"] or result["doubled"] else 0


if __name__ == "__main__":
    sys.exit(main())
