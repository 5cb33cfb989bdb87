"""Opt-in, RUNNER_LOG_AWS_CALLS=1: one log line per invocation of a function local mode stands in for.

Local mode's workers and its callback poller play Lambda; with this variable set, each call they
make of a function's handler logs, on the logger `runner.local.invocations` at INFO (whatever
RUNNER_LOG_LEVEL says), `invocation {json}`: the function, when it started (epoch seconds), the
handler's wall time in seconds (what Lambda would bill), with `all_threads` the CPU seconds of the
process and of the children it reaped meanwhile (a worker's ansible), the AWS calls it made by name
(`{"dynamodb.UpdateItem": 4, ...}`) and what the caller adds (the execution a run message names,
the number of messages). bench/cost.py reads these lines from local mode's output to count what
an execution costs.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator

from chalicelib.platform import aws

VARIABLE = "RUNNER_LOG_AWS_CALLS"
PREFIX = "invocation "
logger = logging.getLogger("runner.local.invocations")


def enabled() -> bool:
    """Whether the invocations are to be logged."""
    return os.environ.get(VARIABLE) == "1"


@contextmanager
def logged(function: str, all_threads: bool = False, **details: Any) -> Iterator[None]:
    """Log the block as one invocation of `function` (when enabled): its duration and AWS calls.

    `all_threads`: count the calls of every thread of the process (a worker runs one invocation
    at a time, with helper threads); otherwise those of this thread only.
    """
    if not enabled():
        yield
        return
    logger.setLevel(logging.INFO)
    epoch = time.time()
    started = time.monotonic()
    cpu_before = _cpu_seconds()
    with aws.counting_calls(all_threads=all_threads) as calls:
        try:
            yield
        finally:
            record = {"function": function, "started": round(epoch, 3),
                      "seconds": round(time.monotonic() - started, 3),
                      "calls": dict(sorted(Counter(calls).items())), **details}
            if all_threads:  # the process is this invocation's alone: its CPU time is the invocation's
                record["cpu_s"] = round(_cpu_seconds() - cpu_before, 3)
            logger.info(PREFIX + json.dumps(record, sort_keys=True))


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def parse(line: str) -> dict | None:
    """The record of an `invocation {json}` log line; None for any other line."""
    at = line.find(PREFIX + "{")
    if at < 0 or "runner.local.invocations" not in line[:at]:
        return None
    try:
        return json.loads(line[at + len(PREFIX):])
    except ValueError:
        return None
