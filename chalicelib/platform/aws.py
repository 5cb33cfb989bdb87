"""boto3 clients, created lazily and cached, and a count of the AWS calls made (per thread or per process)."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config

from chalicelib.platform.config import get_settings

_calls = threading.local()
# Collectors of the calls of every thread (counting_calls(all_threads=True)), and their lock.
_process_collectors: list[list[str]] = []
_process_lock = threading.Lock()

CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, max_pool_connections=32)


def _record_call(model: Any = None, **_: Any) -> None:
    name = f"{model.service_model.service_name}.{model.name}"
    for names in getattr(_calls, "stack", ()):
        names.append(name)
    if _process_collectors:
        with _process_lock:
            for names in _process_collectors:
                names.append(name)


def instrument(client: Any) -> Any:
    """Register the call counter on a botocore client (every client of ours goes through this)."""
    client.meta.events.register("before-call", _record_call)
    return client


@contextmanager
def counting_calls(all_threads: bool = False) -> Iterator[list[str]]:
    """Collect the names of the AWS calls made inside the block: by this thread, or by every thread.

    `all_threads` is for a process that does one thing at a time with helper threads (a worker's
    heartbeat, supervisor and event writer); a request of the threaded API counts its own thread.
    """
    names: list[str] = []
    if all_threads:
        with _process_lock:
            _process_collectors.append(names)
        try:
            yield names
        finally:
            with _process_lock:
                _remove_identical(_process_collectors, names)
        return
    if not hasattr(_calls, "stack"):
        _calls.stack = []
    _calls.stack.append(names)
    try:
        yield names
    finally:
        _remove_identical(_calls.stack, names)


def _remove_identical(collectors: list[list[str]], names: list[str]) -> None:
    # By identity: list.remove compares contents, and two collectors may hold the same names.
    for index, collector in enumerate(collectors):
        if collector is names:
            del collectors[index]
            return


@lru_cache(maxsize=1)
def _data_loader() -> botocore.loaders.Loader:
    return botocore.loaders.create_loader()


def new_botocore_session() -> botocore.session.Session:
    """A botocore session that reads botocore's data files (endpoints, service models) through the
    process's one loader, which parses each file once. A session of its own parses them again:
    about 0.15 CPU-s per client, paid for every client and every model PynamoDB binds, which made
    most of a cold start (and of each functional test's setup)."""
    session = botocore.session.get_session()
    session.register_component("data_loader", _data_loader())
    return session


@lru_cache(maxsize=None)
def _client(service: str, region: str) -> Any:
    session = boto3.session.Session(botocore_session=new_botocore_session())
    return instrument(session.client(service, region_name=region, config=CLIENT_CONFIG))


def client(service: str) -> Any:
    """A cached boto3 client for the configured region; the endpoint comes from AWS_ENDPOINT_URL."""
    return _client(service, get_settings().region)


def reset_clients() -> None:
    """Drop cached clients (after the environment's endpoint or credentials change)."""
    _client.cache_clear()
