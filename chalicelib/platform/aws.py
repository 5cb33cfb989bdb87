"""boto3 clients, created lazily and cached, and a per-thread count of the AWS calls made."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator

import boto3
from botocore.config import Config

from chalicelib.platform.config import get_settings

_calls = threading.local()

CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, max_pool_connections=32)


def _record_call(model: Any = None, **_: Any) -> None:
    for names in getattr(_calls, "stack", ()):
        names.append(f"{model.service_model.service_name}.{model.name}")


def instrument(client: Any) -> Any:
    """Register the call counter on a botocore client (every client of ours goes through this)."""
    client.meta.events.register("before-call", _record_call)
    return client


@contextmanager
def counting_calls() -> Iterator[list[str]]:
    """Collect the names of the AWS calls this thread makes inside the block."""
    names: list[str] = []
    if not hasattr(_calls, "stack"):
        _calls.stack = []
    _calls.stack.append(names)
    try:
        yield names
    finally:
        _calls.stack.remove(names)


@lru_cache(maxsize=None)
def _client(service: str, region: str) -> Any:
    return instrument(boto3.session.Session().client(service, region_name=region, config=CLIENT_CONFIG))


def client(service: str) -> Any:
    """A cached boto3 client for the configured region; the endpoint comes from AWS_ENDPOINT_URL."""
    return _client(service, get_settings().region)


def reset_clients() -> None:
    """Drop cached clients (after the environment's endpoint or credentials change)."""
    _client.cache_clear()
