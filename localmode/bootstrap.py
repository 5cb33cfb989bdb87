"""Local mode's bootstrap accounts: one user per account, credentials in .runner/local.json."""
from __future__ import annotations

import json
import secrets
from pathlib import Path

from pynamodb.exceptions import DoesNotExist

from chalicelib.auth import roles, users
from chalicelib.platform.models import User
from chalicelib.auth.tokens import issue_token

DEFAULT_ACCOUNTS = "DEMO"


def parse_accounts(raw: str | None) -> list[str]:
    """The aliases of RUNNER_LOCAL_ACCOUNTS (comma-separated), in order, without duplicates."""
    aliases: list[str] = []
    for alias in (raw or DEFAULT_ACCOUNTS).split(","):
        alias = alias.strip()
        if alias and alias not in aliases:
            if not users.ACCOUNT_ALIAS.match(alias):
                raise ValueError(f"RUNNER_LOCAL_ACCOUNTS: {alias!r} is not a valid account alias")
            aliases.append(alias)
    if not aliases:
        raise ValueError("RUNNER_LOCAL_ACCOUNTS names no account")
    return aliases


def local_username(alias: str) -> str:
    """The bootstrap user's name for an account."""
    return f"{alias.lower()}-admin"


def previous_passwords(path: Path) -> dict[str, str]:
    """username -> password from an earlier local.json, to keep passwords across restarts."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = document.get("accounts") or [document]
    return {entry["username"]: entry["password"] for entry in entries
            if isinstance(entry, dict) and "username" in entry and "password" in entry}


def bootstrap_accounts(aliases: list[str], signing_key: str, token_ttl: int,
                       known: dict[str, str]) -> list[dict]:
    """Ensure each account and its user exist; answer their credentials and fresh tokens."""
    entries = []
    for alias in aliases:
        users.ensure_account(alias)
        username = local_username(alias)
        password = known.get(username)
        try:
            user = User.get(username)
            keep = (password is not None and user.account_alias == alias
                    and users.verify_password(user, password))
        except DoesNotExist:
            keep = False
        if not keep:
            password = secrets.token_urlsafe(18)
            user = users.create_user(username, password, alias, roles.ACCOUNT_ADMIN, replace=True)
        principal = users.principal_of(user)
        entries.append({"accountAlias": alias, "username": username, "password": password,
                        "bearerToken": issue_token(signing_key, principal, token_ttl)})
    return entries
