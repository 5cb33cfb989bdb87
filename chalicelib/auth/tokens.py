"""Bearer tokens: HS256 JWTs signed with the service's key (chalicelib/auth/signing_key.py).

A token carries its user's token version (`ver`): the authorizer compares it with the version
stored on the user (chalicelib/auth/users.py), which changes with the password or the role, so
a token stops working the moment either changes or the user is deleted.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from chalicelib.platform.errors import Unauthenticated

ISSUER = "runner"
ALGORITHM = "HS256"


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for."""

    username: str
    account_alias: str
    roles: tuple[str, ...]
    # The user's token version when the token was issued (see chalicelib/auth/users.py).
    version: str = ""


def issue_token(key: str, principal: Principal, ttl_seconds: int, now: float | None = None) -> str:
    """A signed token for `principal`, valid for `ttl_seconds`."""
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": ISSUER,
        "sub": principal.username,
        "acc": principal.account_alias,
        "roles": list(principal.roles),
        "ver": principal.version,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_token(key: str, token: str) -> Principal:
    """The principal of a valid token; Unauthenticated for a bad, forged or expired one."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss", "ver"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("the bearer token has expired; log in again") from None
    except jwt.PyJWTError:
        raise Unauthenticated("the bearer token is not valid") from None
    account = claims.get("acc")
    if not isinstance(account, str) or not account:
        raise Unauthenticated("the bearer token names no account")
    version = claims.get("ver")
    if not isinstance(version, str) or not version:
        raise Unauthenticated("the bearer token is not valid")
    return Principal(str(claims["sub"]), account, tuple(claims.get("roles") or ()), version)


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header value."""
    if not header:
        raise Unauthenticated("missing Authorization header: send 'Authorization: Bearer <token>'")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()
