"""Roles: their order, and the one table of the role each route of the API needs.

A user has one role. Each role may do what the roles below it may:

- VIEWER reads: every GET of jobs, executions, schedules, service accounts and deliveries
  (secrets stay masked there).
- OPERATOR also runs and changes what runs: start, restart, stop and kill executions; create,
  update and delete jobs and schedules. A schedule's service account needs OPERATOR to fire.
- ACCOUNT_ADMIN also administers the account: users, service accounts and the webhook secret.
  The webhook secret and the users are ACCOUNT_ADMIN's even to read: the one is a secret that
  cannot be masked (whoever reads it can sign webhooks), the other is the account's membership.

`app.route` looks every route up in `ROUTE_ROLES` when it registers it (a route missing here
fails at import) and `chalicelib/platform/web.py` checks the caller's role before the view runs.
"""
from __future__ import annotations

from typing import Iterable

VIEWER = "VIEWER"
OPERATOR = "OPERATOR"
ACCOUNT_ADMIN = "ACCOUNT_ADMIN"
# Lowest first: a role may do whatever the roles before it may.
ROLES = (VIEWER, OPERATOR, ACCOUNT_ADMIN)
# What a route needs when it needs no token at all.
PUBLIC = "PUBLIC"
# The role of a user stored before roles existed (the list was empty: they were all administrators).
LEGACY_ROLE = ACCOUNT_ADMIN

_JOB = "/jobs/{accountAlias}/{jobId}"
_EXECUTION = _JOB + "/executions/{executionId}"
_SCHEDULE = _JOB + "/schedules/{scheduleId}"
_SERVICE_ACCOUNT = "/serviceAccounts/{accountAlias}/{serviceAccountAlias}"

# (method, path as app.py routes it) -> the lowest role that may call it.
ROUTE_ROLES: dict[tuple[str, str], str] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("POST", "/authentication/login"): PUBLIC,
    # jobs
    ("POST", "/jobs/{accountAlias}"): OPERATOR,
    ("GET", "/jobs/{accountAlias}"): VIEWER,
    ("GET", _JOB): VIEWER,
    ("PUT", _JOB): OPERATOR,
    ("DELETE", _JOB): OPERATOR,
    # executions
    ("POST", _JOB + "/start"): OPERATOR,
    ("GET", _JOB + "/executions"): VIEWER,
    ("GET", _EXECUTION): VIEWER,
    ("POST", _EXECUTION + "/restart"): OPERATOR,
    ("POST", _EXECUTION + "/stop"): OPERATOR,
    ("POST", _EXECUTION + "/kill"): OPERATOR,
    ("GET", _EXECUTION + "/events"): VIEWER,
    ("GET", _EXECUTION + "/log"): VIEWER,
    ("GET", _EXECUTION + "/deliveries"): VIEWER,
    # schedules
    ("POST", _JOB + "/schedules"): OPERATOR,
    ("GET", _JOB + "/schedules"): VIEWER,
    ("GET", _SCHEDULE): VIEWER,
    ("PUT", _SCHEDULE): OPERATOR,
    ("DELETE", _SCHEDULE): OPERATOR,
    # service accounts (their passwords are never answered)
    ("POST", "/serviceAccounts/{accountAlias}"): ACCOUNT_ADMIN,
    ("GET", "/serviceAccounts/{accountAlias}"): VIEWER,
    ("GET", _SERVICE_ACCOUNT): VIEWER,
    ("PUT", _SERVICE_ACCOUNT): ACCOUNT_ADMIN,
    ("DELETE", _SERVICE_ACCOUNT): ACCOUNT_ADMIN,
    # the webhook secret: answered in clear, so not a VIEWER's
    ("GET", "/webhookSecret/{accountAlias}"): ACCOUNT_ADMIN,
    ("POST", "/webhookSecret/{accountAlias}"): ACCOUNT_ADMIN,
    # users
    ("POST", "/users/{accountAlias}"): ACCOUNT_ADMIN,
    ("GET", "/users/{accountAlias}"): ACCOUNT_ADMIN,
    ("GET", "/users/{accountAlias}/{username}"): ACCOUNT_ADMIN,
    ("PUT", "/users/{accountAlias}/{username}"): ACCOUNT_ADMIN,
    ("DELETE", "/users/{accountAlias}/{username}"): ACCOUNT_ADMIN,
}


def required_role(method: str, path: str) -> str:
    """The role a route needs (PUBLIC: none); LookupError for a route the table does not name."""
    try:
        return ROUTE_ROLES[(method.upper(), path)]
    except KeyError:
        raise LookupError(f"{method.upper()} {path} has no entry in chalicelib/auth/roles.py ROUTE_ROLES: "
                          f"say which role it needs") from None


def is_role(value: object) -> bool:
    """Whether `value` names a role."""
    return isinstance(value, str) and value in ROLES


def at_least(role: str | None, needed: str) -> bool:
    """Whether `role` may do what `needed` may (anyone may call a PUBLIC route)."""
    if needed == PUBLIC:
        return True
    return is_role(role) and ROLES.index(role) >= ROLES.index(needed)


def role_of(stored: Iterable[str] | None) -> str:
    """The role of a user from the stored list: its highest role; no role at all is the legacy one.

    Users are written with exactly one role. A list naming no known role (written by hand) gives
    the least privilege.
    """
    stored = [value for value in (stored or []) if isinstance(value, str)]
    if not stored:
        return LEGACY_ROLE
    known = [value for value in stored if value in ROLES]
    return max(known, key=ROLES.index) if known else VIEWER
