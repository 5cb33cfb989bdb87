"""Per-run options of a start, a restart or a schedule: what ansible-playbook is told (no IO).

`limit`, `checkMode`, `diffMode`, `verbosity`, `tags`, `skipTags` and `extraVars`, each
optional. The execution records the options given, normalized, as `options`; the worker turns
them into ansible-playbook's `--limit` (already resolved to the run's hosts, see `limit_hosts`),
`--check`, `--diff`, `-v`..., `--tags` (instead of the job's `playbookTags`), `--skip-tags` and
`--extra-vars` (merged over the job's `properties`).

`extraVars` are stored and answered in clear, as `properties` are: a secret has no place there.
Keys that name ansible's connection and privilege secrets (`ansible_password`,
`ansible_become_password`, ...) are refused, so that a password cannot end up in an execution's
document by habit; secrets travel in the sealed fields (`sshPrivateKey`, the repository's
credentials).
"""
from __future__ import annotations

import json
from typing import Any

from chalicelib.executions.host_patterns import LOCALHOST, PatternError, match_hosts
from chalicelib.platform.errors import InvalidRequest

NAMES = ("limit", "checkMode", "diffMode", "verbosity", "tags", "skipTags", "extraVars")
MAX_VERBOSITY = 4
MAX_LIMIT = 1024
MAX_TAG = 255
MAX_EXTRA_VARS_BYTES = 32 * 1024
# ansible's variables that carry a password or point at a key: never stored in clear.
SECRET_VARIABLES = frozenset({
    "ansible_password", "ansible_ssh_pass", "ansible_ssh_password", "ansible_become_password",
    "ansible_become_pass", "ansible_sudo_pass", "ansible_sudo_password", "ansible_su_pass",
    "ansible_su_password", "ansible_ssh_private_key_file", "ansible_private_key_file",
    "ansible_httpapi_password", "ansible_winrm_password", "ansible_vault_password",
})
ALL = "all"


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(field, "must be true or false")
    return value


def _verbosity(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VERBOSITY:
        raise InvalidRequest(field, f"must be an integer from 0 to {MAX_VERBOSITY} (-v ... -vvvv)")
    return value


def _tag_list(value: Any, field: str) -> str:
    """Comma-separated tag names (a string, or an array of them), normalized to "a,b"."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        value = ",".join(value)
    if not isinstance(value, str):
        raise InvalidRequest(field, "must be a string of comma-separated tag names")
    tags: list[str] = []
    for part in (part.strip() for part in value.split(",")):
        if not part:
            continue
        if part.startswith("-"):
            raise InvalidRequest(field, f"tag {part!r} must not start with '-'")
        if len(part) > MAX_TAG or any(ch.isspace() or ord(ch) < 32 for ch in part):
            raise InvalidRequest(field, f"{part!r} is not a valid tag name")
        if part not in tags:
            tags.append(part)
    return ",".join(tags)


def _limit(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(field, "must be an ansible host pattern such as web1 or web*:!web2")
    value = value.strip()
    if len(value) > MAX_LIMIT or any(ord(ch) < 32 for ch in value):
        raise InvalidRequest(field, f"must be at most {MAX_LIMIT} printable characters")
    if value.startswith("@"):
        raise InvalidRequest(field, "a limit file (@file) is not available to a run: name the hosts")
    return value


def _extra_vars(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidRequest(field, "must be an object of variable names to values")
    for key in value:
        if not key.strip():
            raise InvalidRequest(field, "variable names must not be empty")
        if key.lower() in SECRET_VARIABLES:
            raise InvalidRequest(f"{field}.{key}", "names a secret, which extraVars (stored and shown in clear) "
                                                  "may not carry: use the job's or the start's sshPrivateKey")
    if len(json.dumps(value, separators=(",", ":")).encode("utf-8")) > MAX_EXTRA_VARS_BYTES:
        raise InvalidRequest(field, f"must be at most {MAX_EXTRA_VARS_BYTES} bytes as JSON")
    return value


PARSERS = {"limit": _limit, "checkMode": _bool, "diffMode": _bool, "verbosity": _verbosity,
           "tags": _tag_list, "skipTags": _tag_list, "extraVars": _extra_vars}


def parse_options(body: dict, prefix: str = "") -> dict:
    """The options a body gives (absent and null ones left out), normalized; a 400 names the field."""
    return {name: PARSERS[name](body[name], f"{prefix}{name}") for name in NAMES if body.get(name) is not None}


def limit_hosts(pattern: str, hosts: list[str], field: str = "limit") -> list[str]:
    """The hosts of `hosts` that `--limit pattern` keeps; a 400 when it keeps none.

    `all` among `hosts` (a job's variables for every host) is no host of its own.
    """
    candidates = [host for host in hosts if host != ALL]
    try:
        kept = match_hosts(pattern, candidates)
    except PatternError as exc:
        raise InvalidRequest(field, str(exc)) from None
    if not kept:
        named = ", ".join(candidates[:10]) + (", ..." if len(candidates) > 10 else "")
        hint = " (ansible's implicit localhost is no host of the job)" if pattern in LOCALHOST else ""
        raise InvalidRequest(field, f"{pattern!r} matches no host of the run ({named or 'none'}){hint}")
    return kept
