"""Validation of SSH private keys as the API receives them: base64 of a PEM document."""
from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from cryptography.exceptions import UnsupportedAlgorithm

from chalicelib.platform.errors import InvalidRequest

MAX_KEY_BYTES = 16 * 1024


def decode_private_key(field: str, value: object) -> str:
    """The PEM text of a base64-encoded private key, or InvalidRequest naming `field`."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(field, "must be a non-empty string: the base64 encoding of a PEM private key")
    compact = "".join(value.split())
    if len(compact) > MAX_KEY_BYTES * 2:
        raise InvalidRequest(field, "is too long for a private key")
    try:
        pem = base64.b64decode(compact, validate=True).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidRequest(field, "is not base64: send the PEM private key base64-encoded") from None
    if "-----BEGIN" not in pem or "PRIVATE KEY-----" not in pem:
        raise InvalidRequest(field, "does not decode to a PEM private key (no BEGIN ... PRIVATE KEY line)")
    data = pem.encode("ascii")
    try:
        if "BEGIN OPENSSH PRIVATE KEY" in pem:
            serialization.load_ssh_private_key(data, password=None)
        else:
            serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InvalidRequest(field, "is protected by a passphrase; send a key without one") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidRequest(field, "decodes to a PEM document that is not a readable private key") from None
    return pem if pem.endswith("\n") else pem + "\n"
