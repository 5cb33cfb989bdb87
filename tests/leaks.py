"""What counts as a leaked secret, worked out independently of runner_lambda.masking.

`printed_forms` lists how a secret may be printed (the forms the masker must hide); `leaks`
looks for them in an output, and also decodes every base64-looking run of the output at every
alignment, in both alphabets, looking for the secret's bytes: a secret re-encoded in a way no
list foresaw is found there too.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Iterable

from tests.keyfactory import pem_key

BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}")


# Secrets of every kind a run knows: SSH keys (PKCS#8 and OpenSSH), passwords with a quote, with
# backslashes, with characters beyond ASCII, and a multi-line value stored with CRLF endings.
RSA = pem_key("rsa").decode()
OPENSSH = pem_key("ed25519").decode()
QUOTE = 'pa"ss-w0rd"!'
BACKSLASH = "back\\slash\\n-and-\\u00e9"
NON_ASCII = "pässwörd-Ωμέγα-✓-日本"
MIXED = 'q"uo\\te-é\tend'
CRLF = "first-line-of-it\r\nsecond-line-of-it\r\n"
SECRETS = [RSA, OPENSSH, QUOTE, BACKSLASH, NON_ASCII, MIXED, CRLF]
SECRET_NAMES = ["rsa", "openssh", "quote", "backslash", "non-ascii", "mixed", "crlf"]


def variants(secret: str) -> list[str]:
    """The secret whole: itself, stripped (ansible's file lookup), with LF and with CRLF line endings."""
    found = [secret, secret.strip()]
    if "\n" in secret:
        unix = [value.replace("\r\n", "\n") for value in found]
        found += unix + [value.replace("\n", "\r\n") for value in unix]
    return list(dict.fromkeys(found))


def lines(secret: str) -> list[str]:
    """Each line of a multi-line secret longer than 8 characters, stripped."""
    return [line.strip() for line in secret.splitlines() if len(line.strip()) > 8] if "\n" in secret else []


def printed_forms(secret: str) -> list[str]:
    """Raw, JSON-escaped (once, twice; ASCII or not), base64 (both alphabets), each line."""
    found: list[str] = []
    for value in variants(secret):
        found.append(value)
        for ascii_only in (True, False):
            once = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
            found += [once, json.dumps(once, ensure_ascii=ascii_only)[1:-1]]
        encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
        found += [encoded, base64.urlsafe_b64encode(value.encode("utf-8")).decode("ascii")]
    found += lines(secret)
    return list(dict.fromkeys(found))


def embedded_base64(secret: str) -> list[str]:
    """The secret inside longer texts, base64-encoded at each of the three byte alignments."""
    data = secret.encode("utf-8")
    return [base64.b64encode(b"<" * offset + data + b">" * (offset + 1)).decode("ascii") for offset in range(3)] + \
        [base64.urlsafe_b64encode(b"?" * offset + data + b"~").decode("ascii") for offset in range(3)]


def strings(value: Any) -> Iterable[str]:
    """Every string of a decoded JSON document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def _decodings(text: str) -> Iterable[bytes]:
    for run in BASE64_RUN.findall(text):
        standard = run.replace("-", "+").replace("_", "/")  # URL-safe runs decode the same way
        for start in range(4):
            chunk = standard[start:]
            chunk = chunk[:len(chunk) - len(chunk) % 4]
            try:
                yield base64.b64decode(chunk)
            except (binascii.Error, ValueError):
                continue


def leaks(secret: str, text: str) -> list[str]:
    """How `secret` shows in `text`: the printed forms found, and "base64" if decoding recovers it."""
    found = [form for form in printed_forms(secret) if form in text]
    wanted = [value.encode("utf-8") for value in variants(secret) if len(value) >= 6] + \
        [line.encode("utf-8") for line in lines(secret) if len(line) >= 12]
    if any(needle in decoded for decoded in _decodings(text) for needle in wanted):
        found.append("base64")
    return found
