#!/usr/bin/env python3
"""Sizes benchmark: work that used to grow with the input, before and after.

    .venv/bin/python bench/sizes.py            # a table
    .venv/bin/python bench/sizes.py --json     # the same figures as JSON

1. The duplicate-host check of a start body: the old algorithm (each id looked up in the list of
   the ids before it, O(n²)), reproduced here as the baseline, against the set the service uses now,
   for 2,000 hosts (the most a body may hold) and 29,000 (what fits in a 256 KB body); and the
   whole body check of a start, which now refuses 29,000 hosts before looking at any of them.
2. DynamoDB items read to answer page 1 and page 10 (20 executions a page) of a job with 500
   executions: the old listing (every execution of the job, for every page) against the new one,
   asked with the previous page's cursor and asked by page number alone.
3. Items read to answer the last 5 MB chunk of a 9 MB log (150 events): the old route read every
   event for one answer (which Lambda could not return); a chunk now reads about what it holds.

Items are counted from DynamoDB's own responses (ScannedCount of each Query, one per GetItem that
found its item) by a botocore hook, against moto in-process: no network, no local mode needed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOSTS = (2_000, 29_000)
EXECUTIONS, PAGE_SIZE, PAGES = 500, 20, (1, 10)
LOG_EVENTS, LOG_EVENT_CHARS = 150, 30_000


# --- 1. the duplicate check -------------------------------------------------------------------------

def old_duplicate_check(ids: list[str]) -> None:
    """The check as it was: each id searched in the list of those kept before it."""
    kept: list[str] = []
    for host_id in ids:
        if host_id in kept:
            raise ValueError(host_id)
        kept.append(host_id)


def new_duplicate_check(ids: list[str]) -> None:
    """The check as it is (chalicelib/executions/service.py): a set of the ids seen."""
    seen: set[str] = set()
    for host_id in ids:
        if host_id in seen:
            raise ValueError(host_id)
        seen.add(host_id)


def best_seconds(function, repeat: int) -> float:
    return min(timeit.repeat(function, number=1, repeat=repeat))


def duplicate_check_figures() -> list[dict]:
    from chalicelib.executions.service import parse_run_request
    from chalicelib.platform.errors import InvalidRequest

    figures = []
    for count in HOSTS:
        ids = [f"web-{index:05d}.example.com" for index in range(count)]
        before = best_seconds(lambda: old_duplicate_check(ids), 1 if count > 10_000 else 5)  # seconds each
        after = best_seconds(lambda: new_duplicate_check(ids), 20)
        body = {"hosts": [{"id": host_id} for host_id in ids]}

        def start_body_check() -> None:
            try:
                parse_run_request(body)
            except InvalidRequest:
                pass  # over the limit: refused before any host is looked at

        whole = best_seconds(start_body_check, 20)
        figures.append({"hosts": count, "old_check_s": before, "new_check_s": after, "ratio": before / after,
                        "start_body_check_s": whole, "refused": count > 2_000})
    return figures


# --- 2. and 3. items read, against moto in-process ---------------------------------------------------

class ItemsRead:
    """Items DynamoDB reports having read, for the calls made while `active`."""

    def __init__(self) -> None:
        self.items = 0
        self.active = False

    def __call__(self, parsed: dict, model, **_: object) -> None:
        if not self.active:
            return
        if model.name in ("Query", "Scan"):
            self.items += int(parsed.get("ScannedCount", 0))
        elif model.name == "GetItem":
            self.items += 1 if parsed.get("Item") else 0

    def count(self, action) -> tuple[object, int]:
        self.items, self.active = 0, True
        try:
            return action(), self.items
        finally:
            self.active = False


def old_list(account: str, job_id: str, page: int, size: int) -> list:
    """The listing as it was: the job's item, then every execution of the job read, the page's kept."""
    from chalicelib.platform.models import Execution
    from chalicelib.platform.wiring import job_service

    job_service().load(account, job_id)
    skip, results = page * size, []
    for index, execution in enumerate(Execution.by_created_time.query(job_id, scan_index_forward=False)):
        if skip <= index < skip + size:
            results.append(execution)
    return results


def dynamodb_figures() -> dict:
    from moto import mock_aws

    from chalicelib.platform import aws, models
    from chalicelib.platform import wiring as services
    from chalicelib.platform.config import get_settings, reset_settings
    from chalicelib.platform.template import load_template
    from localmode.emulator import emulator_environment, provision

    template = load_template()
    for name, value in emulator_environment("https://sqs.us-east-1.amazonaws.com", "us-east-1", "bench-",
                                            template).items():
        if name != "AWS_ENDPOINT_URL":
            os.environ[name] = value
    os.environ.pop("AWS_ENDPOINT_URL", None)
    reset_settings()
    aws.reset_clients()
    models.unbind()
    services.reset()
    with mock_aws():
        state = provision(aws.client, "us-east-1", template, get_settings(), None, prefix="bench-")
        os.environ["RUNNER_KMS_KEY_ID"] = state.kms_key_id
        reset_settings()
        models.bind()
        counter = ItemsRead()
        for model in models.MODELS:
            model._get_connection().connection.client.meta.events.register("after-call.dynamodb", counter)
        return {"executions": listing_figures(counter), "log": log_figures(counter)}


def listing_figures(counter: ItemsRead) -> list[dict]:
    from chalicelib.auth import users
    from chalicelib.platform.models import Execution
    from chalicelib.platform.paging import PageRequest, decode_cursor
    from chalicelib.platform.wiring import execution_service, job_service

    users.ensure_account("BENCH")
    job = job_service().create("BENCH", {"repository": {"url": "https://example.com/p.git", "defaultPlaybook": "a.yml"},
                                         "hosts": [{"id": "web-1"}]})
    executions = execution_service()
    for index in range(EXECUTIONS):
        executions._put_counted(Execution(job["id"], f"00000000-0000-4000-8000-{index:012d}", account_alias="BENCH",
                                          created_time=1_700_000_000_000 + index, status="SUCCESS", attempt=1,
                                          timers=[], target_hosts=["web-1"], failed_hosts=[], log_start=0),
                                "BENCH", chosen=False)
    # Cursors as a client walking the pages holds them (the walk itself is not counted).
    cursors = {1: None}
    page = executions.list("BENCH", job["id"], PageRequest(0, PAGE_SIZE))
    for number in range(2, max(PAGES) + 1):
        cursors[number] = page.next_cursor
        _, _, after = decode_cursor(page.next_cursor)
        page = executions.list("BENCH", job["id"], PageRequest(number - 1, PAGE_SIZE, after))
    figures = []
    for number in PAGES:
        index = number - 1
        _, before = counter.count(lambda: old_list("BENCH", job["id"], index, PAGE_SIZE))
        after = None if cursors[number] is None else decode_cursor(cursors[number])[2]
        answered, with_cursor = counter.count(
            lambda: executions.list("BENCH", job["id"], PageRequest(index, PAGE_SIZE, after)))
        by_number_answer, by_number = counter.count(
            lambda: executions.list("BENCH", job["id"], PageRequest(index, PAGE_SIZE)))
        assert answered.body == by_number_answer.body and answered.body["size"] == PAGE_SIZE
        figures.append({"page": number, "old_items_read": before, "new_items_read_with_cursor": with_cursor,
                        "new_items_read_by_page_number": by_number})
    return figures


def log_figures(counter: ItemsRead) -> dict:
    from chalicelib.auth import users
    from chalicelib.platform.models import Execution, ExecutionEvent
    from chalicelib.platform.wiring import execution_service, job_service
    from runner_lambda.reporting import EventSink, Masker

    users.ensure_account("LOGS")
    job = job_service().create("LOGS", {"repository": {"url": "https://example.com/p.git", "defaultPlaybook": "a.yml"},
                                        "hosts": [{"id": "web-1"}]})
    execution = Execution(job["id"], "10000000-0000-4000-8000-000000000001", account_alias="LOGS",
                          created_time=1_700_000_000_000, status="FAILURE", attempt=1, timers=[],
                          target_hosts=["web-1"], failed_hosts=[], log_start=0)
    service = execution_service()
    service._put_counted(execution, "LOGS", chosen=False)
    sink = EventSink(execution.execution_id, 1, Masker([]), 1, flush_seconds=60, log_start=0)
    for counter_value in range(1, LOG_EVENTS + 1):
        sink.add({"event": "verbose", "counter": counter_value,
                  "stdout": (f"{counter_value:05d}" + 'aé€😀"\n' * LOG_EVENT_CHARS)[:LOG_EVENT_CHARS]})
    sink.close()
    size = sum(len((event.stdout + "\n").encode()) for event in ExecutionEvent.query(execution.execution_id))
    costs, offset = [], 0
    while offset is not None:
        chunk, items = counter.count(lambda: service.log("LOGS", job["id"], execution.execution_id, offset))
        costs.append(items)
        offset = chunk.next_offset
    # The route as it was: the execution's item, then every event, for one answer of the whole log.
    _, before = counter.count(lambda: (Execution.get(job["id"], execution.execution_id, consistent_read=True),
                                       list(ExecutionEvent.query(execution.execution_id, consistent_read=True))))
    return {"events": LOG_EVENTS, "log_bytes": size, "chunks": len(costs), "old_items_read": before,
            "items_read_per_chunk": costs}


# --- output --------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    arguments = parser.parse_args()
    figures = {"duplicate_check": duplicate_check_figures(), **dynamodb_figures()}
    if arguments.json:
        print(json.dumps(figures, indent=2))
        return 0
    print("Duplicate-host check of a start body (best of several runs)")
    print(f"  {'hosts':>7}  {'old (list)':>12}  {'new (set)':>12}  {'ratio':>8}  {'whole body check now':>22}")
    for row in figures["duplicate_check"]:
        whole = f"{row['start_body_check_s'] * 1e3:.3f} ms" + (" (refused)" if row["refused"] else "")
        print(f"  {row['hosts']:>7,}  {row['old_check_s'] * 1e3:>9.2f} ms  {row['new_check_s'] * 1e3:>9.3f} ms"
              f"  {row['ratio']:>7.0f}x  {whole:>22}")
    print(f"\nItems read to list executions ({EXECUTIONS} executions, {PAGE_SIZE} a page)")
    print(f"  {'page':>5}  {'before':>7}  {'after, with cursor':>19}  {'after, by page number':>22}")
    for row in figures["executions"]:
        print(f"  {row['page']:>5}  {row['old_items_read']:>7}  {row['new_items_read_with_cursor']:>19}"
              f"  {row['new_items_read_by_page_number']:>22}")
    log = figures["log"]
    print(f"\nItems read for the log ({log['events']} events, {log['log_bytes'] / 2**20:.1f} MiB, "
          f"{log['chunks']} chunks of at most 5 MiB on the wire)")
    print(f"  before (the whole log in one answer, too large for Lambda): {log['old_items_read']}")
    print(f"  after, chunk by chunk: {', '.join(map(str, log['items_read_per_chunk']))}")
    print("\n(after = the execution's or job's item, plus the page's or chunk's events, plus one-item probes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
