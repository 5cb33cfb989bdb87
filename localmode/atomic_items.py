"""DynamoDB's item-level atomicity, which moto does not have.

On DynamoDB each write to an item is atomic: a conditional update checks its condition and applies
its actions with nothing in between, and eight concurrent `ADD version 1` make the version grow by
eight. moto's backend reads, checks and writes in Python with no lock, so two concurrent requests
can both pass a condition or overwrite each other's increment. Local mode serves many threads
(the API, the workers, Step Functions), so without this it would lose writes that AWS never loses.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable

_ITEM_OPERATIONS = ("put_item", "update_item", "delete_item", "transact_write_items", "get_item",
                    "query", "scan", "transact_get_items", "batch_get_item", "batch_write_item")
_LOCK = threading.RLock()


def _serialized(operation: Callable) -> Callable:
    @functools.wraps(operation)
    def under_lock(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return operation(*args, **kwargs)

    under_lock.serialized = True  # type: ignore[attr-defined]
    return under_lock


def make_items_atomic() -> None:
    """Run every item read and write of moto's DynamoDB one at a time, in this process."""
    from moto.dynamodb.models import DynamoDBBackend

    for name in _ITEM_OPERATIONS:
        operation = getattr(DynamoDBBackend, name)
        if not getattr(operation, "serialized", False):
            setattr(DynamoDBBackend, name, _serialized(operation))
