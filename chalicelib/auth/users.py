"""Accounts and users: password hashing, login, and creation for the admin command."""
from __future__ import annotations

import re
import time
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from chalicelib.platform import models
from chalicelib.platform.errors import Conflict, InvalidRequest, Unauthenticated
from chalicelib.platform.models import Account, User
from chalicelib.platform.storage import condition_failed
from chalicelib.auth.tokens import Principal

ACCOUNT_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")
DEFAULT_ROLES = ("ACCOUNT_ADMIN",)

_hasher = PasswordHasher()
# A hash to verify against when the user does not exist, so both cases take the same time.
_DUMMY_HASH = _hasher.hash("runner-timing-equalizer")


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    return _hasher.hash(password)


def check_login_body(body: Any) -> tuple[str, str]:
    """The username and password of a login body."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object with username and password")
    for name in ("username", "password"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise InvalidRequest(name, "is required")
    return body["username"], body["password"]


def authenticate(username: str, password: str) -> Principal:
    """The principal of valid credentials; Unauthenticated otherwise (same answer for both causes)."""
    models.bind()
    try:
        user = User.get(username)
        stored = user.password_hash
    except DoesNotExist:
        user, stored = None, _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        raise Unauthenticated("invalid username or password") from None
    if user is None:
        raise Unauthenticated("invalid username or password")
    return Principal(user.username, user.account_alias, tuple(user.roles or DEFAULT_ROLES))


def check_alias(alias: str) -> None:
    """InvalidRequest unless `alias` is a well-formed account alias (the accounts table holds other
    items too, such as the token signing key's, under keys no alias matches)."""
    if not ACCOUNT_ALIAS.match(alias):
        raise InvalidRequest("accountAlias", "must be 1-32 letters, digits, '-' or '_', starting with a letter or digit")


def ensure_account(alias: str) -> bool:
    """Create the account if it does not exist; True when it was created."""
    check_alias(alias)
    models.bind()
    try:
        Account(alias, job_count=0, created_time=int(time.time() * 1000)).save(
            condition=Account.account_alias.does_not_exist())
    except PutError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


def create_user(username: str, password: str, account_alias: str,
                roles: tuple[str, ...] = DEFAULT_ROLES, replace: bool = False) -> User:
    """Create a user of an existing account (`replace` resets the password of an existing one)."""
    if not USERNAME.match(username):
        raise InvalidRequest("username", "must be 1-128 letters, digits or ._@+-")
    if len(password) < 8:
        raise InvalidRequest("password", "must be at least 8 characters")
    check_alias(account_alias)
    models.bind()
    try:
        Account.get(account_alias)
    except DoesNotExist as exc:
        raise InvalidRequest("accountAlias", f"account {account_alias} does not exist") from exc
    user = User(username, password_hash=hash_password(password), account_alias=account_alias,
                roles=list(roles), created_time=int(time.time() * 1000))
    try:
        user.save(condition=None if replace else User.username.does_not_exist())
    except PutError as exc:
        if condition_failed(exc):
            raise Conflict(f"user {username} already exists") from exc
        raise
    return user


def verify_password(user: User, password: str) -> bool:
    """Whether `password` is the user's."""
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def set_concurrency(account_alias: str, limit: int) -> None:
    """How many executions of the account may run at once."""
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit", "must be from 1 to 1000")
    check_alias(account_alias)
    models.bind()
    try:
        Account(account_alias).update(actions=[Account.max_concurrent.set(limit)],
                                      condition=Account.account_alias.exists())
    except UpdateError as exc:
        if condition_failed(exc):
            raise InvalidRequest("accountAlias", f"account {account_alias} does not exist") from exc
        raise
