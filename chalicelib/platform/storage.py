"""DynamoDB's error vocabulary, read in one place: did a write lose its condition, and which one."""
from __future__ import annotations

from botocore.exceptions import ClientError
from pynamodb.exceptions import PynamoDBException, TransactWriteError

# A single write's condition did not hold (PynamoDB's Put/Update/DeleteError, or boto3 directly).
CONDITION_FAILED = "ConditionalCheckFailedException"
# A transaction names the reason of each cancelled write without the "Exception" suffix.
CANCELLED_BY_CONDITION = "ConditionalCheckFailed"


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
