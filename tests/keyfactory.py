"""Real private keys for tests, base64-encoded as the API takes them."""
from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


@lru_cache(maxsize=None)
def pem_key(kind: str = "ed25519") -> bytes:
    """A fresh private key as PEM (OpenSSH format for ed25519, PKCS#8 for rsa)."""
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())


def b64_key(kind: str = "ed25519") -> str:
    """The base64 of a PEM private key."""
    return base64.b64encode(pem_key(kind)).decode("ascii")
