"""Accounts and users: passwords, login, the token check, and the users of an account.

Revocation. Each user item holds a token version, a random value replaced whenever the user's
password or role changes; a token carries the version it was issued with. The authorizer reads
the user (one strongly consistent GetItem, without the password hash) on every request and
refuses a token whose user is gone, belongs to another account, or holds another version. There
is no cache: Lambda runs many authorizer instances, none of which would learn of a change made
through another, and a cache keyed by (user, version) would still need the read to know the
current version. API Gateway's own authorizer cache is off (`ttl_seconds=0` in app.py) for the
same reason. A version is random rather than a counter so that a user deleted and created again
under the same name never matches the old user's tokens.

The last administrator. The account item counts its ACCOUNT_ADMIN users (`adminCount`); every
write that makes or unmakes an administrator moves the count in the same DynamoDB transaction as
the user item, and a decrement is conditional on the count being above 1. Two concurrent
demotions of the last two administrators therefore cannot both commit. The user item's write is
conditional on the token version read, which every role change replaces, so a decision is never
taken on a role that changed meanwhile. Accounts older than the count get it on first need,
counted through the users' index while no write can move it (each one requires it to exist).
"""
from __future__ import annotations

import re
import time
import uuid
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from chalicelib.auth import roles, throttle
from chalicelib.auth.tokens import Principal
from chalicelib.platform import models
from chalicelib.platform.errors import Conflict, InvalidRequest, NotFound, Unauthenticated, either
from chalicelib.platform.models import Account, User
from chalicelib.platform.storage import cancellation_codes, condition_failed, failed_conditions

ACCOUNT_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 256
# The token version of users stored before versions existed (a new version is never this).
LEGACY_TOKEN_VERSION = "0"
REVOKED = "the bearer token is no longer valid (its user was deleted or changed); log in again"
INVALID_LOGIN = "invalid username or password"
# Reads and writes of a user lost to concurrent changes before the caller is told to retry.
_ATTEMPTS = 4

_hasher = PasswordHasher()
# A hash to verify against when the user does not exist, so both cases take the same time.
_DUMMY_HASH = _hasher.hash("runner-timing-equalizer")


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    return _hasher.hash(password)


def _verify_hash(stored: str, password: str) -> bool:
    """Whether `password` matches the argon2 hash `stored` (the one place a password is checked)."""
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def token_version(user: User) -> str:
    """The version a token of this user must carry."""
    return user.token_version or LEGACY_TOKEN_VERSION


def principal_of(user: User) -> Principal:
    """Who a token of this user speaks for (one role, in a list as the login answers it)."""
    return Principal(user.username, user.account_alias, (roles.role_of(user.roles),), token_version(user))


def check_login_body(body: Any) -> tuple[str, str]:
    """The username and password of a login body."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object with username and password")
    for name in ("username", "password"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise InvalidRequest(name, "is required")
    return body["username"], body["password"]


def authenticate(username: str, password: str) -> Principal:
    """The principal of valid credentials; Unauthenticated otherwise (same answer for both causes).

    Throttled (chalicelib/auth/throttle.py): each try is counted on the user before its hash is
    computed; a locked username is TooManyRequests, without hashing.
    """
    models.bind()
    # A name no user can have is no user (and no key DynamoDB would take: at most 2048 bytes).
    user = throttle.reserve_try(username) if USERNAME.match(username) else None
    principal = _check(user, password)
    if not throttle.clear(user):
        raise Unauthenticated(INVALID_LOGIN)  # deleted while its password was checked
    return principal


def authenticate_stored(username: str, password: str) -> Principal:
    """As `authenticate`, without the throttle: for stored credentials the caller did not choose
    (a schedule's service account when it fires). They are no guess, so they neither count nor
    wait for a lock to end: an attack on the username does not stop its schedules, and a stale
    stored password does not lock its user out."""
    models.bind()
    try:
        user = User.get(username, consistent_read=True) if USERNAME.match(username) else None
    except DoesNotExist:
        user = None
    return _check(user, password)


def _check(user: User | None, password: str) -> Principal:
    if user is None:
        _verify_hash(_DUMMY_HASH, password)
        raise Unauthenticated(INVALID_LOGIN)
    if not _verify_hash(user.password_hash, password):
        raise Unauthenticated(INVALID_LOGIN)
    return principal_of(user)


def current_principal(claimed: Principal) -> Principal:
    """The principal of a verified token as its user stands now (the authorizer's check).

    Unauthenticated when the user is gone, is a user of another account, or has another token
    version (password or role changed) than the token. One consistent GetItem, no password hash.
    """
    models.bind()
    try:
        user = User.get(claimed.username, consistent_read=True,
                        attributes_to_get=["username", "accountAlias", "roles", "tokenVersion"])
    except DoesNotExist:
        raise Unauthenticated(REVOKED) from None
    if user.account_alias != claimed.account_alias or token_version(user) != claimed.version:
        raise Unauthenticated(REVOKED)
    return principal_of(user)


def verify_password(user: User, password: str) -> bool:
    """Whether `password` is the user's (not throttled: for local mode's own bootstrap users)."""
    return _verify_hash(user.password_hash, password)


# --- accounts ---------------------------------------------------------------------------------

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
        Account(alias, job_count=0, admin_count=0, created_time=int(time.time() * 1000)).save(
            condition=Account.account_alias.does_not_exist())
    except PutError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


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


# --- the users of an account ------------------------------------------------------------------

def render_user(user: User) -> dict:
    """A user as the API answers it: never its password or hash."""
    return {"username": user.username, "accountAlias": user.account_alias, "role": roles.role_of(user.roles),
            "createdTime": int(user.created_time)}


def _username(value: Any) -> str:
    if not isinstance(value, str) or not USERNAME.match(value):
        raise InvalidRequest("username", "is required: 1-128 letters, digits or ._@+-")
    return value


def _password(value: Any) -> str:
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise InvalidRequest("password", f"is required: a string of {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return value


def _role(value: Any) -> str:
    if not roles.is_role(value):
        raise InvalidRequest("role", f"is required: {either(roles.ROLES)}")
    return value


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    return body


class _UserChanged(Exception):
    """The user item's condition failed: it changed (or went) since it was read."""


def _not_found(account: str, username: str) -> NotFound:
    return NotFound(f"user {username} not found in account {account}")


def _load(account: str, username: str) -> User:
    """The user, if it is one of `account`'s (NotFound otherwise: another account's is not told)."""
    models.bind()
    try:
        user = User.get(username, consistent_read=True) if USERNAME.match(username) else None
    except DoesNotExist:
        user = None
    if user is None or user.account_alias != account:
        raise _not_found(account, username)
    return user


def _unchanged(user: User):
    """The condition that the stored user is still the one read (every role or password change
    replaces its token version)."""
    same = (User.token_version == user.token_version) if user.token_version else User.token_version.does_not_exist()
    return (User.account_alias == user.account_alias) & same


def _count_admins(account: str) -> None:
    """Give an account older than the admin count its count (a no-op if another request did)."""
    admins = sum(1 for user in User.by_account.query(account)
                 if roles.role_of(user.roles) == roles.ACCOUNT_ADMIN)
    try:
        Account(account).update(actions=[Account.admin_count.set(admins)],
                                condition=Account.account_alias.exists() & Account.admin_count.does_not_exist())
    except UpdateError as exc:
        if not condition_failed(exc):
            raise


def _commit(account: str, user: User, write: str, condition: Any, admin_delta: int,
            actions: list | None = None) -> None:
    """Write the user item (`write`: "save", "update" with `actions`, or "delete"; conditional on
    `condition`) and move the account's admin count by `admin_delta`, in one transaction.

    _UserChanged when the user's condition failed (or the transaction collided with another);
    Conflict when it would leave the account without an ACCOUNT_ADMIN; NotFound without account.
    """
    for _ in range(3):
        try:
            with TransactWrite(connection=models.connection()) as transaction:
                if write == "save":
                    transaction.save(user, condition=condition)
                elif write == "update":
                    transaction.update(user, actions=actions or [], condition=condition)
                else:
                    transaction.delete(user, condition=condition)
                if admin_delta < 0:
                    transaction.update(Account(account), actions=[Account.admin_count.add(admin_delta)],
                                       condition=Account.admin_count > -admin_delta)
                elif admin_delta > 0:
                    transaction.update(Account(account), actions=[Account.admin_count.add(admin_delta)],
                                       condition=Account.admin_count.exists())
                else:
                    transaction.condition_check(Account, account, condition=Account.account_alias.exists())
            return
        except TransactWriteError as exc:
            failed = failed_conditions(exc)
            if 0 in failed or (1 not in failed and "TransactionConflict" in cancellation_codes(exc)):
                raise _UserChanged() from exc
            if 1 not in failed:
                raise
        try:
            stored = Account.get(account, consistent_read=True)
        except DoesNotExist:
            raise NotFound(f"account {account} does not exist") from None
        if stored.admin_count is None:
            _count_admins(account)
        elif admin_delta < 0 and stored.admin_count <= -admin_delta:
            raise Conflict(f"account {account} must keep at least one {roles.ACCOUNT_ADMIN}: "
                           f"make another user {roles.ACCOUNT_ADMIN} first")
        # else the count moved meanwhile: try again
    raise _UserChanged()


def _create(account: str, username: str, password_hash: str, role: str) -> User:
    """Store a new user; Conflict when the username is taken, in whichever account."""
    user = User(username, password_hash=password_hash, account_alias=account, roles=[role],
                created_time=int(time.time() * 1000), token_version=uuid.uuid4().hex)
    for _ in range(_ATTEMPTS):
        try:
            _commit(account, user, "save", User.username.does_not_exist(), 1 if role == roles.ACCOUNT_ADMIN else 0)
            return user
        except _UserChanged:
            try:
                User.get(username, consistent_read=True, attributes_to_get=["username"])
            except DoesNotExist:
                continue  # the transaction collided with another one: try again
            # Usernames are global: the answer is the same whichever account holds it.
            raise Conflict(f"user {username} already exists; choose another username", "username") from None
    raise Conflict(f"account {account} kept changing; retry")


def _change(account: str, username: str, password_hash: str | None, role: str | None) -> User:
    """Set a user's role and/or password (each change revokes the user's tokens)."""
    for _ in range(_ATTEMPTS):
        user = _load(account, username)
        before = roles.role_of(user.roles)
        after = role or before
        if password_hash is None and list(user.roles or []) == [after]:
            return user  # nothing changes: the tokens stay valid
        actions = [User.roles.set([after]), User.token_version.set(uuid.uuid4().hex)]
        if password_hash is not None:
            # A new password starts the login throttle afresh.
            actions += [User.password_hash.set(password_hash), User.failed_logins.set(0),
                        User.login_locked_until.remove()]
        delta = (after == roles.ACCOUNT_ADMIN) - (before == roles.ACCOUNT_ADMIN)
        try:
            _commit(account, user, "update", _unchanged(user), delta, actions)
        except _UserChanged:
            continue
        user.roles = [after]
        return user
    raise Conflict(f"user {username} kept changing; read it again and retry")


def create_user(username: str, password: str, account_alias: str, role: str | None = None,
                replace: bool = False) -> User:
    """Create a user of an existing account (ACCOUNT_ADMIN unless `role` says otherwise).

    `replace` (the admin command, local mode's bootstrap) sets the password, and the role if
    given, of a user that already exists in that account.
    """
    _username(username)
    _password(password)
    if role is not None:
        _role(role)
    check_alias(account_alias)
    models.bind()
    try:
        Account.get(account_alias, consistent_read=True)
    except DoesNotExist as exc:
        raise InvalidRequest("accountAlias", f"account {account_alias} does not exist") from exc
    hashed = hash_password(password)
    try:
        return _create(account_alias, username, hashed, role or roles.ACCOUNT_ADMIN)
    except Conflict:
        if not replace:
            raise
    try:
        return _change(account_alias, username, hashed, role)
    except NotFound:
        raise Conflict(f"user {username} already exists; choose another username", "username") from None


def add_user(account: str, body: Any) -> dict:
    """POST /users/{account}: {username, password, role} -> the user."""
    body = _object(body)
    username, password, role = _username(body.get("username")), _password(body.get("password")), _role(body.get("role"))
    models.bind()
    return render_user(_create(account, username, hash_password(password), role))


def list_users(account: str) -> dict:
    """The account's users, by username."""
    models.bind()
    return {"users": [render_user(user) for user in User.by_account.query(account)]}


def get_user(account: str, username: str) -> dict:
    """One user of the account."""
    return render_user(_load(account, username))


def update_user(account: str, username: str, body: Any) -> dict:
    """PUT /users/{account}/{username}: a new `role` and/or `password`."""
    body = _object(body)
    if body.get("role") is None and body.get("password") is None:
        raise InvalidRequest("body", "send a role, a password or both")
    role = _role(body["role"]) if body.get("role") is not None else None
    password = _password(body["password"]) if body.get("password") is not None else None
    _load(account, username)  # a 404 before paying for a hash
    hashed = hash_password(password) if password is not None else None
    return render_user(_change(account, username, hashed, role))


def delete_user(account: str, username: str) -> None:
    """Delete a user (never the account's last ACCOUNT_ADMIN); its tokens stop working at once."""
    for _ in range(_ATTEMPTS):
        user = _load(account, username)
        delta = -1 if roles.role_of(user.roles) == roles.ACCOUNT_ADMIN else 0
        try:
            _commit(account, user, "delete", _unchanged(user), delta)
        except _UserChanged:
            continue
        return
    raise Conflict(f"user {username} kept changing; read it again and retry")
