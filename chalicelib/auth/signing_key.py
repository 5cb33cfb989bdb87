"""The key that signs bearer tokens: a KMS data key, kept sealed in the accounts table.

KMS `GenerateDataKey` (48 random bytes, encryption context {"purpose": "token-signing"}) makes
the key; only its CiphertextBlob is stored, in the accounts table's item SIGNING_KEY_ITEM (a key
no account alias can take). Reading it back is a GetItem and a KMS Decrypt with that context,
once per process: the plaintext is cached. The stack's KMS key is already paid for, so the
signing key costs nothing while idle (a Secrets Manager secret would cost $0.40 a month).

Who may do what is in the IAM policies (.chalice/policy-*.json, checked by tests/unit/test_iam.py):
the API function creates it on first need (`IssuerSigningKey`: GenerateDataKey, a PutItem
conditional on the item not existing, so that of two first logins racing one key wins and the
other reads it); the token authorizer only reads it (`SigningKey`: GetItem of this one item,
Decrypt bound to the context). No other role can Decrypt with that context: the worker's KMS
grant requires an accountAlias and a jobId in it.
"""
from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError

from chalicelib.platform import models
from chalicelib.platform.errors import Unauthenticated
from chalicelib.platform.models import SIGNING_KEY_ITEM, SigningKeyItem
from chalicelib.platform.storage import condition_failed

# The encryption context of the key, and the only context the policies let it be opened with.
TOKEN_SIGNING_CONTEXT = {"purpose": "token-signing"}
# 384 random bits, which base64url makes 64 characters: HMAC-SHA256's block, the longest key it
# uses as it is (a longer one is hashed down to 32 bytes first).
KEY_BYTES = 48

logger = logging.getLogger(__name__)


class SigningKeyMissing(Unauthenticated):
    """No signing key is stored yet, so no token can be valid: a 401, as for any bad token."""

    def __init__(self) -> None:
        super().__init__("the bearer token is not valid")


def key_text(plaintext: bytes) -> str:
    """The key as tokens are signed with it: the data key's bytes, base64url without padding."""
    return base64.urlsafe_b64encode(plaintext).rstrip(b"=").decode("ascii")


class SigningKey:
    """The signing key as a token checker holds it: read and opened once, never created."""

    def __init__(self, kms: Any) -> None:
        self._kms = kms
        self._value: str | None = None
        self._lock = threading.Lock()

    def get(self) -> str:
        """The key's value (SigningKeyMissing while none is stored: not cached, so that the key a
        first login creates is found by the next check)."""
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = stored_key(self._kms) or _missing()
        return self._value


class IssuerSigningKey:
    """The signing key as the token issuer holds it: read, or created on first need, once."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self._kms = kms
        self._key_id = key_id
        self._value: str | None = None
        self._lock = threading.Lock()

    def get(self) -> str:
        """The key's value."""
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = stored_key(self._kms) or create_key(self._kms, self._key_id)
        return self._value


def stored_key(kms: Any) -> str | None:
    """The stored key, opened; None when there is none."""
    models.bind_one(SigningKeyItem)
    try:
        item = SigningKeyItem.get(SIGNING_KEY_ITEM, consistent_read=True)
    except DoesNotExist:
        return None
    return _open(kms, item.sealed_key)


def create_key(kms: Any, key_id: str) -> str:
    """A new key, stored unless another process stored one first; the stored one."""
    created = _store_new(kms, key_id)
    if created is not None:
        return created
    # Another process stored its key first: that one signs every token.
    return _open(kms, SigningKeyItem.get(SIGNING_KEY_ITEM, consistent_read=True).sealed_key)


def ensure_signing_key(kms: Any, key_id: str) -> bool:
    """Create the key unless one is stored, without opening a stored one (a deploy's bootstrap);
    True when this call created it."""
    models.bind_one(SigningKeyItem)
    try:
        SigningKeyItem.get(SIGNING_KEY_ITEM, consistent_read=True, attributes_to_get=["accountAlias"])
        return False
    except DoesNotExist:
        return _store_new(kms, key_id) is not None


def _store_new(kms: Any, key_id: str) -> str | None:
    """A new key, if this call stored it (a conditional put: the first writer wins); else None."""
    answer = kms.generate_data_key(KeyId=key_id, NumberOfBytes=KEY_BYTES, EncryptionContext=TOKEN_SIGNING_CONTEXT)
    sealed = base64.b64encode(answer["CiphertextBlob"]).decode("ascii")
    models.bind_one(SigningKeyItem)
    try:
        SigningKeyItem(SIGNING_KEY_ITEM, sealed_key=sealed, created_time=int(time.time() * 1000)).save(
            condition=SigningKeyItem.account_alias.does_not_exist())
    except PutError as exc:
        if condition_failed(exc):
            return None
        raise
    logger.info("created the token signing key")
    return key_text(answer["Plaintext"])


def _open(kms: Any, sealed_key: str) -> str:
    answer = kms.decrypt(CiphertextBlob=base64.b64decode(sealed_key), EncryptionContext=TOKEN_SIGNING_CONTEXT)
    return key_text(answer["Plaintext"])


def _missing() -> str:
    logger.warning("no token signing key in the accounts table: no login has created one yet")
    raise SigningKeyMissing()
