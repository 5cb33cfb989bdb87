"""Waiting in tests: poll for a condition until a generous deadline, never assert on how long it took.

A test waits for what it expects to see (a status, an event, a count) and then asserts behaviour.
The deadline only turns a hang into a failure with a message; it is sized for a loaded 2-core
machine, not for how fast things should be (that is a benchmark figure: see bench/).
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

# Long enough for anything the tests wait on (a playbook run, a schedule fire, a retried
# delivery) on a busy 2-core machine; pytest.ini's per-test timeout is longer still.
DEADLINE = 90.0
# How often a condition is polled: keeps the polling from competing with the service for CPU.
POLL_INTERVAL = 0.1


def wait_for(probe: Callable[[], T], accept: Callable[[T], object], timeout: float = DEADLINE,
             message: str | Callable[[T], str] = "the condition was never met",
             interval: float = POLL_INTERVAL) -> T:
    """Call `probe` until `accept(value)` holds and answer that value.

    After `timeout` seconds, fail with `message` (or `message(last value)`) and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() >= deadline:
            text = message(value) if callable(message) else f"{message}; last seen: {value!r}"
            raise AssertionError(f"{text} (waited {timeout:g} s)")
        time.sleep(interval)  # paces the polling; not a wait for the condition itself


def wait_until(predicate: Callable[[], T], timeout: float = DEADLINE,
               message: str = "the condition was never met", interval: float = POLL_INTERVAL) -> T:
    """Call `predicate` until it answers something truthy and answer that; fail with `message` after `timeout` s."""
    return wait_for(predicate, bool, timeout, lambda _: message, interval)
