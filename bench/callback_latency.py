#!/usr/bin/env python3
"""Callback delivery latency in local mode: an event's creation versus its receipt by a webhook.

    .venv/bin/python bench/callback_latency.py               # 5 executions of a 10-task playbook
    .venv/bin/python bench/callback_latency.py --runs 10 --tasks 20 --json

Starts local mode (bench/api.py's LocalMode) and an HTTP receiver on loopback, creates a job whose
DEBUG callback points at the receiver, and runs it --runs times one after the other. For each event
delivered, latency = receipt time - the ansible-runner event's `created` (same host, same clock):
the worker's batching, the callback queue, the sender and the POST. Status notices have no event
time and are counted apart. Reported: median, p99 and max in ms, and whether every event of every
run arrived exactly once after de-duplication by deliveryId (exit code 1 if not).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from api import on_local_mode  # bench/api.py: a script's own directory comes first on sys.path


class Receiver:
    def __init__(self) -> None:
        self.received: dict[str, tuple[dict, float]] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                at = time.time()
                body = json.loads(raw)
                with owner.lock:
                    owner.received.setdefault(body["deliveryId"], (body, at))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def make_repo(tasks: int) -> Path:
    path = Path(tempfile.mkdtemp(prefix="runner-cb-repo-"))
    steps = "".join(f"    - name: step {index}\n      debug:\n        msg: step {index}\n" for index in range(tasks))
    (path / "site.yml").write_text(f"- hosts: all\n  gather_facts: false\n  tasks:\n{steps}")
    for args in (["init", "-q", "-b", "master"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args],
                       cwd=path, check=True, capture_output=True)
    return path


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(local: dict, runs: int, tasks: int) -> dict:
    receiver = Receiver()
    api = requests.Session()
    api.trust_env = False
    api.headers["Authorization"] = f"Bearer {local['bearerToken']}"
    base, account = local["baseUrl"], local["accountAlias"]
    repo = make_repo(tasks)
    job = api.post(f"{base}/jobs/{account}", timeout=30, json={
        "repository": {"url": f"file://{repo}", "defaultPlaybook": "site.yml"},
        "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}],
        "callbacks": [{"url": receiver.url, "level": "DEBUG"}]}).json()[0]
    expected = 0
    for _ in range(runs):
        execution = api.post(f"{base}/jobs/{account}/{job['id']}/start", json={}, timeout=30).json()
        path = f"{base}/jobs/{account}/{job['id']}/executions/{execution['execution_id']}"
        while api.get(path, timeout=30).json()["status"] not in ("SUCCESS", "FAILURE", "INIT_FAILURE"):
            time.sleep(0.2)
        expected += len(api.get(f"{path}/events", params={"size": 1000}, timeout=30).json()["results"]) + 4
    deadline = time.monotonic() + 60
    while len(receiver.received) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    latencies = sorted((at - datetime.fromisoformat(body["event"]["created"]).timestamp()) * 1000
                       for body, at in receiver.received.values()
                       if body["type"] == "event" and body["event"].get("created"))
    receiver.server.shutdown()
    return {"events": len(latencies), "expected_notices": expected, "received_notices": len(receiver.received),
            "median_ms": round(statistics.median(latencies)), "p99_ms": round(percentile(latencies, 0.99)),
            "max_ms": round(latencies[-1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    code, result = on_local_mode(args.startup_timeout, lambda local: run(local, args.runs, args.tasks))
    if code:
        return code
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['events']} events delivered: latency median {result['median_ms']} ms, "
              f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms; "
              f"notices {result['received_notices']}/{result['expected_notices']}")
    return 0 if result["received_notices"] == result["expected_notices"] else 1


if __name__ == "__main__":
    sys.exit(main())
