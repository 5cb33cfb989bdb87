#!/usr/bin/env python3
"""Callback delivery latency in local mode: an event's creation versus its receipt by a webhook.

    .venv/bin/python bench/callback_latency.py               # 5 executions of a 10-task playbook
    .venv/bin/python bench/callback_latency.py --runs 10 --tasks 20 --json
    .venv/bin/python bench/callback_latency.py --runs 1 --tasks 1                 # quickest

Starts local mode (common.LocalMode) and an HTTP receiver on loopback, creates a job whose DEBUG
callback points at the receiver, and runs it --runs times one after the other. For each event
delivered, latency = receipt time - the ansible-runner event's `created` (same host, same clock):
the worker's batching, the callback queue, the sender and the POST. Status notices have no event
time and are counted apart. Reported: median, p95, p99 and max in ms (common.percentile: linear
interpolation), and whether every notice of every run arrived exactly once after de-duplication by
deliveryId.

Deadlines: each execution must end within 120 s, and the notices arrive within 60 s of the last
one's end. Exit code: 1 when a notice is missing or an execution overran its deadline, 2 when the
benchmark could not run (local mode did not start, or the API refused a request it needs).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from common import (Credentials, DeadlineMissed, Jobs, Summary, add_standard_arguments, debug_playbook,
                    event_epoch_ms, file_url, job_spec, log, make_repository, on_local_mode, print_summary,
                    run_benchmark, scratch_directory, summarize, wait_for)

RUN_TIMEOUT_S = 120.0
DELIVERY_TIMEOUT_S = 60.0
# A successful execution's status notices: PENDING, INITIALIZING, RUNNING and SUCCESS.
STATUS_NOTICES = 4


class Receiver:
    """A webhook on loopback that keeps the first copy of each delivery, with its receipt time."""

    def __init__(self) -> None:
        self.received: dict[str, tuple[dict, float]] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                at = time.time()  # first: the latency ends when the notice is here, not when parsed
                body = json.loads(raw)
                with owner.lock:
                    owner.received.setdefault(body["deliveryId"], (body, at))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # no access log on stderr

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        """Distinct deliveries received so far."""
        with self.lock:
            return len(self.received)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def measure(local: Credentials, runs: int, tasks: int) -> dict[str, Any]:
    """Run the job `runs` times; the latency figures and the notice counts."""
    receiver = Receiver()
    try:
        with local.client() as client, scratch_directory("runner-cb-repo-") as work:
            jobs = Jobs(client, local.account)
            repo = make_repository(work, {"site.yml": debug_playbook(tasks)})
            job_id = jobs.create(job_spec(file_url(repo), "site.yml", host_vars={"ansible_connection": "local"},
                                          callbacks=[{"url": receiver.url, "level": "DEBUG"}]))
            expected = 0
            for index in range(runs):
                execution_id = jobs.start(job_id)
                document = jobs.wait_final(job_id, execution_id, RUN_TIMEOUT_S)
                events = jobs.events(job_id, execution_id)
                expected += len(events) + STATUS_NOTICES
                log(f"run {index + 1}/{runs}: {document['status']}, {len(events)} events")
            try:
                wait_for(lambda: receiver.count() >= expected, DELIVERY_TIMEOUT_S, "the callback deliveries")
            except DeadlineMissed as missed:
                log(f"FAILED: {missed}: {receiver.count()} of {expected} notices arrived")
    finally:
        receiver.close()
    with receiver.lock:
        received = list(receiver.received.values())
    latencies = [at * 1000.0 - created for created, at in
                 ((event_epoch_ms(body["event"].get("created")), at) for body, at in received
                  if body["type"] == "event") if created is not None]
    return {"events": len(latencies), "expected_notices": expected, "received_notices": len(received),
            "latency": summarize(latencies)}


def document(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: the counts, and the latency figures flat (count, median_ms, p95_ms, p99_ms, max_ms)."""
    latency: Summary | None = result["latency"]
    return {**{key: value for key, value in result.items() if key != "latency"},
            **(latency.as_dict("ms") if latency else {})}


def print_text(result: dict[str, Any]) -> None:
    """The text report."""
    print_summary(f"{result['events']} events delivered: latency", result["latency"])
    print(f"notices {result['received_notices']}/{result['expected_notices']}")


def exit_code(result: dict[str, Any]) -> int:
    """0 when every notice arrived exactly once, else 1."""
    return 0 if result["received_notices"] == result["expected_notices"] else 1


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="executions, one after the other (default 5)")
    parser.add_argument("--tasks", type=int, default=10, help="debug tasks in the playbook (default 10)")
    add_standard_arguments(parser, startup_timeout=120.0)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.tasks < 1:
        parser.error("--runs and --tasks must be at least 1")
    return run_benchmark(
        lambda: on_local_mode(args.startup_timeout, lambda local: measure(local, args.runs, args.tasks)),
        args.json, print_text, exit_code, document)

if __name__ == "__main__":
    sys.exit(main())
