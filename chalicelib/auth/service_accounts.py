"""Service accounts: the credentials a schedule logs in with when it fires."""
from __future__ import annotations

import json
import re
import uuid
from collections import OrderedDict
from typing import Any

from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, UpdateError

from chalicelib.platform import models
from chalicelib.auth import roles, users
from chalicelib.platform.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthenticated
from chalicelib.jobs.service import now_ms
from chalicelib.platform.models import ServiceAccount, User
from chalicelib.platform.sealing import MASK, Opener, Sealer
from chalicelib.platform.storage import condition_failed
from chalicelib.auth.tokens import Principal

# Credential pairs that logged in, remembered per process (no secret in them: both are stored forms).
PROVEN_CACHE = 1024
ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def render_service_account(item: ServiceAccount) -> dict:
    """The service account as the API answers it: the password is never returned."""
    return {
        "id": item.id,
        "accountAlias": item.account_alias,
        "alias": item.alias,
        "username": item.username,
        "password": MASK,
        "scheduleCount": int(item.schedule_count or 0),
        "createdTime": int(item.created_time),
        "lastUpdatedTime": int(item.last_updated_time),
    }


def _string(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(name, "is required and must be a non-empty string")
    if len(value) > 256:
        raise InvalidRequest(name, "must be at most 256 characters")
    return value


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object with username and password")
    return body


def validate_alias(alias: Any, field: str = "alias") -> str:
    """A service account alias: 1-64 letters, digits, '.', '_' or '-'."""
    if not isinstance(alias, str) or not ALIAS.match(alias):
        raise InvalidRequest(field, "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return alias


class ServiceAccountService:
    """Service accounts of an account, with their passwords sealed by KMS."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self._kms = kms
        self._key_id = key_id
        self._proven: OrderedDict[tuple[str, str], bool] = OrderedDict()

    @staticmethod
    def _context(account: str, alias: str) -> dict[str, str]:
        return {"accountAlias": account, "serviceAccount": alias}

    @staticmethod
    def _aad(account: str, alias: str) -> str:
        return f"{account}/serviceAccounts/{alias}/password"

    def _seal(self, account: str, alias: str, password: str) -> str:
        sealer = Sealer(self._kms, self._key_id, self._context(account, alias))
        return json.dumps(sealer.seal(self._aad(account, alias), password))

    def _open(self, item: ServiceAccount) -> str:
        opener = Opener(self._kms, self._context(item.account_alias, item.alias))
        return opener.open(self._aad(item.account_alias, item.alias), json.loads(item.sealed_password))

    @staticmethod
    def _check_credentials(account: str, username: str, password: str) -> None:
        """The credentials must log in as a user of `account` (one answer for every way they fail).

        A login try like any other: it counts toward the username's login throttle, so this is
        no way around it (a locked username is a 429 here too).
        """
        try:
            principal = users.authenticate(username, password)
        except Unauthenticated:
            principal = None
        if principal is None or principal.account_alias != account:
            raise InvalidRequest("password", f"username and password do not log in as a user of account {account}")

    def load(self, account: str, alias: str) -> ServiceAccount:
        """The stored service account (NotFound when absent)."""
        models.bind()
        try:
            return ServiceAccount.get(account, alias, consistent_read=True)
        except DoesNotExist as exc:
            raise NotFound(f"service account {alias} not found in account {account}") from exc

    def create(self, account: str, body: Any) -> dict:
        """Store a new service account once its credentials are proven to log in."""
        body = _object(body)
        alias = validate_alias(body.get("alias"))
        username, password = _string(body, "username"), _string(body, "password")
        self._check_credentials(account, username, password)
        now = now_ms()
        item = ServiceAccount(account, alias, id=str(uuid.uuid4()), username=username,
                              sealed_password=self._seal(account, alias, password), schedule_count=0,
                              created_time=now, last_updated_time=now)
        try:
            item.save(condition=ServiceAccount.alias.does_not_exist())
        except PutError as exc:
            if condition_failed(exc):
                raise Conflict(f"service account {alias} already exists in account {account}") from exc
            raise
        return render_service_account(item)

    def get(self, account: str, alias: str) -> dict:
        """One service account."""
        return render_service_account(self.load(account, alias))

    def list(self, account: str) -> dict:
        """The aliases of the account's service accounts, in alphabetical order."""
        models.bind()
        aliases = [item.alias for item in ServiceAccount.query(account, attributes_to_get=["alias"])]
        return {"accounts": aliases}

    def update(self, account: str, alias: str, body: Any) -> dict:
        """Replace the credentials; "********" as the password keeps the stored one."""
        body = _object(body)
        username, password = _string(body, "username"), _string(body, "password")
        current = self.load(account, alias)
        keep = password == MASK
        if keep and username != current.username:
            # The stored password is for its user: trying it on another would tell whether the
            # two share a password.
            raise InvalidRequest("password", f"send the password of {username}: \"{MASK}\" keeps the stored "
                                              f"password only for the same username")
        self._check_credentials(account, username, self._open(current) if keep else password)
        sealed = current.sealed_password if keep else self._seal(account, alias, password)
        condition = ServiceAccount.alias.exists()
        if keep:  # the kept password must still be the one just checked
            condition &= ServiceAccount.sealed_password == current.sealed_password
        try:
            current.update(actions=[ServiceAccount.username.set(username), ServiceAccount.sealed_password.set(sealed),
                                    ServiceAccount.last_updated_time.set(now_ms())], condition=condition)
        except UpdateError as exc:
            if condition_failed(exc):
                raise Conflict(f"service account {alias} was changed or deleted by another request") from exc
            raise
        return render_service_account(current)

    def delete(self, account: str, alias: str) -> None:
        """Delete a service account that no schedule names (409 otherwise)."""
        item = self.load(account, alias)
        try:
            item.delete(condition=ServiceAccount.alias.exists() & (
                ServiceAccount.schedule_count.does_not_exist() | (ServiceAccount.schedule_count == 0)))
        except DeleteError as exc:
            if not condition_failed(exc):
                raise
            try:
                ServiceAccount.get(account, alias, consistent_read=True)
            except DoesNotExist:
                raise NotFound(f"service account {alias} not found in account {account}") from exc
            raise Conflict(f"service account {alias} is used by a schedule; delete or change the schedules "
                           f"that name it first") from exc

    def log_in(self, account: str, alias: str) -> Principal:
        """Log in with the service account's stored credentials (for the schedule trigger).

        NotFound when the service account is gone; Unauthenticated when its credentials no longer
        log in as a user of `account`; Forbidden when that user's role may not start jobs (below
        OPERATOR). A pair of (sealed password, user's password hash) that logged in before logs in
        again without KMS and argon2: changing either one misses. Stored credentials are no guess:
        this login is not throttled (an attack on the username does not stop its schedules, and a
        stale stored password does not lock its user out).
        """
        item = self.load(account, alias)
        try:
            user = User.get(item.username, consistent_read=True)
        except DoesNotExist:
            user = None
        proof = (item.sealed_password, user.password_hash) if user is not None else None
        if proof is None or proof not in self._proven:
            principal = users.authenticate_stored(item.username, self._open(item))
            if proof is not None:
                self._proven[proof] = True
                while len(self._proven) > PROVEN_CACHE:
                    self._proven.popitem(last=False)
        else:
            principal = users.principal_of(user)
        if principal.account_alias != account:
            raise Unauthenticated(f"user {item.username} is no longer a user of account {account}")
        role = roles.role_of(principal.roles)
        if not roles.at_least(role, roles.OPERATOR):
            raise Forbidden(f"its user {item.username} is {role}; starting a job needs {roles.OPERATOR}", "role")
        return principal
