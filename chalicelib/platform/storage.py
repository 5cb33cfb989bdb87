"""DynamoDB's error vocabulary, read in one place (did a write lose its condition, and which one), and paged reads."""
from __future__ import annotations

from typing import Any, Callable

from botocore.exceptions import ClientError
from pynamodb.exceptions import PynamoDBException, TransactWriteError

from chalicelib.platform.paging import PageRequest, encode_cursor

# A single write's condition did not hold (PynamoDB's Put/Update/DeleteError, or boto3 directly).
CONDITION_FAILED = "ConditionalCheckFailedException"
# A transaction names the reason of each cancelled write without the "Exception" suffix.
CANCELLED_BY_CONDITION = "ConditionalCheckFailed"
# A transaction cancelled because another one was writing the same item at that moment.
CANCELLED_BY_CONFLICT = "TransactionConflict"


def condition_failed(exc: BaseException) -> bool:
    """Whether a storage write failed only because its condition did not hold."""
    if isinstance(exc, PynamoDBException):
        return exc.cause_response_code == CONDITION_FAILED
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code") == CONDITION_FAILED
    return False


def cancellation_codes(exc: TransactWriteError) -> list[str | None]:
    """Why each write of a cancelled transaction failed, in the transaction's order (None: not it)."""
    reasons = getattr(exc, "cancellation_reasons", None) or []
    return [reason.code if reason is not None else None for reason in reasons]


def failed_conditions(exc: TransactWriteError) -> set[int]:
    """The positions, in the transaction's order, of the writes whose condition did not hold."""
    return {index for index, code in enumerate(cancellation_codes(exc)) if code == CANCELLED_BY_CONDITION}


def conflicted(exc: TransactWriteError) -> bool:
    """Whether a transaction lost only a race with another one (trying again may succeed)."""
    codes = [code for code in cancellation_codes(exc) if code not in (None, "None")]
    return bool(codes) and all(code == CANCELLED_BY_CONFLICT for code in codes)


def newest_first_page(index: Any, hash_value: str, key_names: tuple[str, str], request: PageRequest,
                      total: int, cursor_of: Callable[[Any], tuple]) -> tuple[list, str | None]:
    """One page of a `createdTime-index` query, newest first, and the cursor of the next page.

    `key_names` are the table's hash and range key attributes. With the request's cursor the page
    starts after the item it names, and reads only itself; a page asked by number alone (the
    reference's way) first reads the keys of the items before it. `total` (kept by the caller)
    says whether a next page exists.
    """
    skip = request.page * request.size
    if skip >= total:
        return [], None
    hash_name, range_name = key_names
    start = None
    if request.after is not None:
        item_id, created = request.after
        start = {hash_name: {"S": hash_value}, range_name: {"S": item_id}, "createdTime": {"N": str(created)}}
    elif skip:
        keys = index.query(hash_value, scan_index_forward=False, limit=skip, page_size=min(skip, 1000),
                           attributes_to_get=[hash_name, range_name, "createdTime"])
        for _ in keys:
            pass
        start = keys.last_evaluated_key
        if not start:
            return [], None
    items = list(index.query(hash_value, scan_index_forward=False, limit=request.size, page_size=request.size,
                             last_evaluated_key=start))
    more = len(items) == request.size and skip + len(items) < total
    return items, encode_cursor(request.page + 1, request.size, cursor_of(items[-1])) if more else None
