"""Step 4: the stack's first account and its ACCOUNT_ADMIN user, and a file with the credentials.

A new stack has empty tables, and no one to log in as. This creates an account and one user with
a generated password, through the same `users` functions as `python -m chalicelib.admin`, against
the stack's own tables (the caller points the settings at them first), and writes the
credentials to `<state dir>/<stack>.json` (mode 0600) in the shape local mode's `local.json` has.
The password is never printed. It also creates the token signing key, sealed by the stack's KMS
key (chalicelib/auth/signing_key.py), unless one is stored: the API would create it at the first
login otherwise.

Deploying again changes nothing here: the account and the user are found, and their password is
never reset. When the file is still there and still holds the user's password, only its
`baseUrl` is refreshed; when it is not (a deploy from another machine, or the file was removed),
the user is left as it is and the message says how to set a new password.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pynamodb.exceptions import DoesNotExist

from chalicelib.auth import users
from chalicelib.auth.signing_key import ensure_signing_key
from chalicelib.platform import aws
from chalicelib.platform.config import get_settings
from chalicelib.platform.errors import Conflict
from chalicelib.platform.models import User

DEFAULT_ACCOUNT = "MAIN"


@dataclass(frozen=True)
class Outcome:
    """What the bootstrap did, for the deploy's closing lines."""

    account_alias: str
    username: str
    created: bool
    credentials: Path | None  # the file holding the password, None when this machine does not know it
    message: str


def credentials_path(state_dir: Path, stack_name: str) -> Path:
    """Where a stack's credentials are kept."""
    return Path(state_dir) / f"{stack_name}.json"


def admin_username(alias: str) -> str:
    """The first user of an account, named as local mode names its own."""
    return f"{alias.lower()}-admin"


def _read(path: Path) -> dict:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def write_private(path: Path, document: dict) -> None:
    """Write JSON readable by its owner only, at no moment readable by others, and atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    os.replace(scratch, path)


def ensure_first_admin(stack_name: str, region: str, base_url: str | None, state_dir: Path,
                       account_alias: str = DEFAULT_ACCOUNT) -> Outcome:
    """Create the first account and its admin unless they exist; keep the credentials file current.

    The file's account, when the file exists, wins over `account_alias`: the first account is
    the one created at the first deploy.
    """
    path = credentials_path(state_dir, stack_name)
    known = _read(path)
    alias = known.get("accountAlias") or account_alias
    username = known.get("username") or admin_username(alias)
    users.ensure_account(alias)
    ensure_signing_key(aws.client("kms"), get_settings().kms_key_id)
    try:
        user = User.get(username)
    except DoesNotExist:
        user = None
    document = {"baseUrl": base_url, "accountAlias": alias, "username": username,
                "stackName": stack_name, "region": region}
    if user is not None:
        password = known.get("password")
        if isinstance(password, str) and users.verify_password(user, password):
            write_private(path, {**document, "password": password})
            return Outcome(alias, username, False, path, f"user {username} of account {alias} exists")
        return Outcome(alias, username, False, None,
                       f"user {username} of account {alias} exists and its password is not in {path}; set a new one with: "
                       f".venv/bin/python -m chalicelib.admin --stack {stack_name} create-user --account {alias} "
                       f"--username {username} --reset")
    password = secrets.token_urlsafe(18)
    try:
        users.create_user(username, password, alias)  # never replaces: a user created meanwhile wins
    except Conflict:
        return Outcome(alias, username, False, None, f"user {username} of account {alias} was created by another deploy")
    write_private(path, {**document, "password": password})
    return Outcome(alias, username, True, path, f"created account {alias} and its administrator {username}")
