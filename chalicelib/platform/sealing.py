"""Envelope encryption of secrets: a KMS data key per write, AES-256-GCM per value."""
from __future__ import annotations

import base64
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MASK = "********"
ENVELOPE_VERSION = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Sealer:
    """Seals any number of values under one data key, asked of KMS on first use only."""

    def __init__(self, kms: Any, key_id: str, context: dict[str, str]) -> None:
        self._kms = kms
        self._key_id = key_id
        self._context = context
        self._data_key: bytes | None = None
        self._encrypted_key: str | None = None

    def seal(self, aad: str, plaintext: str) -> dict:
        """An envelope holding `plaintext`, bound to `aad` (where the value lives)."""
        if self._data_key is None:
            answer = self._kms.generate_data_key(
                KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=self._context
            )
            self._data_key = answer["Plaintext"]
            self._encrypted_key = _b64(answer["CiphertextBlob"])
        nonce = os.urandom(12)
        ciphertext = AESGCM(self._data_key).encrypt(nonce, plaintext.encode("utf-8"), aad.encode("utf-8"))
        return {"v": ENVELOPE_VERSION, "k": self._encrypted_key, "n": _b64(nonce), "c": _b64(ciphertext)}


class Opener:
    """Opens envelopes, asking KMS once for each distinct data key."""

    def __init__(self, kms: Any, context: dict[str, str]) -> None:
        self._kms = kms
        self._context = context
        self._keys: dict[str, bytes] = {}

    def open(self, aad: str, envelope: dict) -> str:
        """The plaintext of an envelope sealed with the same `aad`; ValueError when tampered."""
        encrypted_key = envelope["k"]
        if encrypted_key not in self._keys:
            answer = self._kms.decrypt(
                CiphertextBlob=base64.b64decode(encrypted_key), EncryptionContext=self._context
            )
            self._keys[encrypted_key] = answer["Plaintext"]
        try:
            plaintext = AESGCM(self._keys[encrypted_key]).decrypt(
                base64.b64decode(envelope["n"]), base64.b64decode(envelope["c"]), aad.encode("utf-8")
            )
        except InvalidTag as exc:
            raise ValueError(f"the secret sealed for {aad} does not authenticate") from exc
        return plaintext.decode("utf-8")
