"""Parsing and validation of a job body into a normalized spec and its secrets (no IO)."""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from chalicelib.platform.config import RepositoryRules, WebhookRules
from chalicelib.platform.errors import InvalidRequest, either
from chalicelib.jobs.ssh_keys import decode_private_key
from chalicelib.platform.sealing import MASK
from chalicelib.callbacks.targets import refused_target

CALLBACK_LEVELS = ("DEBUG", "ERROR", "RESULT")
DEFAULT_BRANCH = "master"
MAX_TTL_MINUTES = 525_600  # one year: the longest a Step Functions task may wait
MAX_HOSTS = 2000
MAX_CALLBACKS = 20
MAX_TEXT = 4096
# scp-like git address: user@host:path (no scheme).
_SCP_URL = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9.-]+):(?!//)(?P<path>[^\s]+)$")
# What git refuses in a ref name, plus a leading "-" that a CLI would read as an option.
_BAD_REF = re.compile(r"(^-)|(\.\.)|[\x00-\x20\x7f~^:?*\[\\]|(@\{)|(^/)|(/$)|(\.lock$)|(//)")
_HOST_ID = re.compile(r"^[^\s,]+$")

SECRET_DEFAULT_KEY = "sshPrivateKey"
SECRET_REPO_PASSWORD = "repository.credentials.password"
SECRET_REPO_KEY = "repository.credentials.sshPrivateKey"


def host_key_path(host_id: str) -> str:
    """Secret path of a host's private key."""
    return f"hosts[{host_id}].sshPrivateKey"


@dataclass
class JobInput:
    """A validated job body: the public spec, and the secrets it names (MASK = keep the stored one)."""

    spec: dict
    secrets: dict[str, str] = field(default_factory=dict)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_text(body: dict, name: str, field_name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(field_name, "must be a string")
    if len(value) > MAX_TEXT:
        raise InvalidRequest(field_name, f"must be at most {MAX_TEXT} characters")
    return value


def _object_or_merged_list(value: Any, field_name: str) -> dict:
    """An object, or (as the reference calls some objects "array") a list of objects merged."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        merged: dict = {}
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise InvalidRequest(f"{field_name}[{index}]", "must be an object")
            merged.update(item)
        return merged
    raise InvalidRequest(field_name, "must be an object")


def validate_repository_url(url: Any, rules: RepositoryRules, field_name: str = "repository.url") -> str:
    """A git URL the worker may clone, of a scheme `rules` allow (scp-like addresses are SSH)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest(field_name, "is required: the git repository to clone")
    url = url.strip()
    if len(url) > 2048 or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidRequest(field_name, "is not a valid URL")
    scp = _SCP_URL.match(url)
    if scp and "ssh" in rules.schemes:
        # git hands the user, the host and the path to ssh: none may read as an option.
        for part in ("user", "host", "path"):
            if scp.group(part).startswith("-"):
                raise InvalidRequest(field_name, f"the {part} of an SSH address must not start with '-'")
        return url
    parts = urlsplit(url)
    if parts.scheme not in rules.schemes:
        hint = either([f"{scheme}://" for scheme in rules.schemes])
        raise InvalidRequest(field_name, f"must be an {hint} URL, got scheme {parts.scheme or 'none'!r}")
    if parts.scheme == "file":
        if not parts.path.startswith("/"):
            raise InvalidRequest(field_name, "a file:// URL must name an absolute path")
        return url
    if not parts.hostname:
        raise InvalidRequest(field_name, "names no host")
    if parts.hostname.startswith("-") or (parts.username or "").startswith("-"):
        raise InvalidRequest(field_name, "the host and the user must not start with '-'")
    try:
        parts.port
    except ValueError:
        raise InvalidRequest(field_name, "names a port that is not a number from 1 to 65535") from None
    if parts.password is not None or (parts.username and parts.scheme in ("https", "http")):
        raise InvalidRequest(field_name, "must not carry credentials: put them in repository.credentials")
    return url


def validate_playbook(path: Any, field_name: str = "repository.defaultPlaybook") -> str:
    """A playbook path inside the repository, normalized."""
    if not isinstance(path, str) or not path.strip():
        raise InvalidRequest(field_name, "is required: the playbook file to run, relative to the repository root")
    if "\x00" in path or len(path) > 1024:
        raise InvalidRequest(field_name, "is not a valid path")
    if path.startswith("/") or path.startswith("\\") or re.match(r"^[A-Za-z]:[\\/]", path):
        raise InvalidRequest(field_name, "must be relative to the repository root, not absolute")
    normalized = posixpath.normpath(path.replace("\\", "/"))
    if normalized == ".." or normalized.startswith("../") or normalized == ".":
        raise InvalidRequest(field_name, "must stay inside the repository")
    if normalized.startswith("-"):
        raise InvalidRequest(field_name, "must not start with '-'")
    return normalized


def _branch(repository: dict) -> str:
    branch = repository.get("branch")
    ref = repository.get("ref")
    name, value = ("repository.branch", branch) if branch is not None else ("repository.ref", ref)
    if value is None:
        return DEFAULT_BRANCH
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(name, "must be a non-empty string naming a branch, tag or commit")
    value = value.strip()
    if len(value) > 255 or _BAD_REF.search(value):
        raise InvalidRequest(name, f"{value!r} is not a valid git branch or tag name")
    return value


def _credentials(repository: dict, secrets: dict[str, str]) -> dict | None:
    raw = repository.get("credentials")
    if raw is None:
        return None
    if isinstance(raw, list):
        if len(raw) > 1:
            raise InvalidRequest("repository.credentials", "must be one object")
        raw = raw[0] if raw else None
        if raw is None:
            return None
    if not isinstance(raw, dict):
        raise InvalidRequest("repository.credentials", "must be an object with username and password or sshPrivateKey")
    username = _optional_text(raw, "username", "repository.credentials.username")
    password = raw.get("password")
    if password is not None:
        if not isinstance(password, str) or password == "":
            raise InvalidRequest("repository.credentials.password", "must be a non-empty string")
        if not username:
            raise InvalidRequest("repository.credentials.username", "is required with a password")
        secrets[SECRET_REPO_PASSWORD] = password
    key = raw.get("sshPrivateKey")
    if key is not None:
        secrets[SECRET_REPO_KEY] = _secret_key(key, "repository.credentials.sshPrivateKey")
    if username is None and password is None and key is None:
        return None
    return {"username": username} if username is not None else {}


def _secret_key(value: Any, field_name: str) -> str:
    """A private key to seal, or MASK to keep the stored one."""
    if value == MASK:
        return MASK
    return decode_private_key(field_name, value)


def _tags(body: dict, repository: dict) -> list[str]:
    raw = body.get("playbookTags")
    name = "playbookTags"
    if raw is None:
        raw, name = repository.get("playbookTags"), "repository.playbookTags"
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list):
        raise InvalidRequest(name, "must be an array of tag names")
    tags: list[str] = []
    for index, tag in enumerate(raw):
        if not isinstance(tag, str):
            raise InvalidRequest(f"{name}[{index}]", "must be a string")
        for part in tag.split(","):
            part = part.strip()
            if not part:
                continue
            if len(part) > 255 or any(ch.isspace() for ch in part):
                raise InvalidRequest(f"{name}[{index}]", f"{part!r} is not a valid tag")
            if part.startswith("-"):
                raise InvalidRequest(f"{name}[{index}]", f"{part!r} must not start with '-'")
            if part not in tags:
                tags.append(part)
    return tags


def validate_host_id(value: Any, field_name: str) -> str:
    """A host name, group name or 'all'."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(field_name, "is required: a host name, group name or 'all'")
    host_id = value.strip()
    if len(host_id) > 255 or not _HOST_ID.match(host_id) or host_id.startswith("-"):
        raise InvalidRequest(field_name, f"{host_id!r} is not a valid host name")
    return host_id


def _hosts(body: dict, secrets: dict[str, str]) -> list[dict]:
    raw = body.get("hosts")
    if raw is None:
        raise InvalidRequest("hosts", "is required: the hosts (or groups, or 'all') to run the playbook on")
    if not isinstance(raw, list):
        raise InvalidRequest("hosts", "must be an array of host objects")
    if len(raw) > MAX_HOSTS:
        raise InvalidRequest("hosts", f"must hold at most {MAX_HOSTS} hosts")
    hosts: list[dict] = []
    seen: set[str] = set()
    for index, host in enumerate(raw):
        where = f"hosts[{index}]"
        if not isinstance(host, dict):
            raise InvalidRequest(where, "must be an object with an id")
        host_id = validate_host_id(host.get("id"), f"{where}.id")
        if host_id in seen:
            raise InvalidRequest(f"{where}.id", f"duplicate host id {host_id!r}")
        seen.add(host_id)
        host_vars = _object_or_merged_list(host.get("hostVars"), f"{where}.hostVars")
        if "sshPrivateKey" in host and host["sshPrivateKey"] is not None:
            secrets[host_key_path(host_id)] = _secret_key(host["sshPrivateKey"], f"{where}.sshPrivateKey")
        hosts.append({"id": host_id, "hostVars": host_vars})
    return hosts


def validate_callback_url(url: Any, rules: WebhookRules, field_name: str) -> str:
    """A webhook URL of a scheme, to an address, that `rules` allow (on AWS: HTTPS to a public address)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest(field_name, "is required: the webhook URL")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in rules.schemes or not parts.hostname:
        raise InvalidRequest(field_name, f"{url!r} is not an {either(rules.schemes)} URL")
    if len(url) > 2048 or any(ch.isspace() for ch in url):
        raise InvalidRequest(field_name, "is not a valid URL")
    refused = refused_target(url, rules)
    if refused:
        raise InvalidRequest(field_name, f"{url!r} may not receive webhooks: {refused}")
    return url


def _callbacks(body: dict, rules: WebhookRules) -> list[dict]:
    raw = body.get("callbacks")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequest("callbacks", "must be an array of callback objects")
    if len(raw) > MAX_CALLBACKS:
        raise InvalidRequest("callbacks", f"must hold at most {MAX_CALLBACKS} callbacks")
    callbacks = []
    for index, item in enumerate(raw):
        where = f"callbacks[{index}]"
        if isinstance(item, str):
            item = {"url": item}
        if not isinstance(item, dict):
            raise InvalidRequest(where, "must be an object with a url and a level")
        url = validate_callback_url(item.get("url"), rules, f"{where}.url")
        level = item.get("level") or "DEBUG"
        if not isinstance(level, str) or level.upper() not in CALLBACK_LEVELS:
            raise InvalidRequest(f"{where}.level", f"must be one of {', '.join(CALLBACK_LEVELS)}")
        callbacks.append({"url": url, "level": level.upper()})
    return callbacks


def _ttl(body: dict) -> int | None:
    value = body.get("executionTtl")
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise InvalidRequest("executionTtl", "must be a positive integer number of minutes")
    if value > MAX_TTL_MINUTES:
        raise InvalidRequest("executionTtl", f"must be at most {MAX_TTL_MINUTES} minutes")
    return value


MAX_RETRY_ATTEMPTS = 5
MAX_RETRY_DELAY_SECONDS = 3600


def _retry(body: dict) -> dict | None:
    """`retry`: how often (1-5), how long after (0-3600 s), and on which hosts a FAILURE runs again."""
    raw = body.get("retry")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidRequest("retry", 'must be an object such as {"attempts": 2, "delaySeconds": 30}')
    attempts = raw.get("attempts")
    if not _is_int(attempts) or not 1 <= attempts <= MAX_RETRY_ATTEMPTS:
        raise InvalidRequest("retry.attempts", f"is required: an integer from 1 to {MAX_RETRY_ATTEMPTS}")
    delay = raw.get("delaySeconds", 0)
    if delay is None:
        delay = 0
    if not _is_int(delay) or not 0 <= delay <= MAX_RETRY_DELAY_SECONDS:
        raise InvalidRequest("retry.delaySeconds", f"must be an integer from 0 to {MAX_RETRY_DELAY_SECONDS}")
    only_failed = raw.get("onlyFailedHosts", True)
    if only_failed is None:
        only_failed = True
    if not isinstance(only_failed, bool):
        raise InvalidRequest("retry.onlyFailedHosts", "must be true or false")
    return {"attempts": attempts, "delaySeconds": delay, "onlyFailedHosts": only_failed}


def parse_job(body: Any, repositories: RepositoryRules, webhooks: WebhookRules) -> JobInput:
    """Validate a create/update body against these rules; raise InvalidRequest naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    secrets: dict[str, str] = {}
    repository = body.get("repository")
    if repository is None:
        raise InvalidRequest("repository", "is required: the git repository holding the playbook")
    if not isinstance(repository, dict):
        raise InvalidRequest("repository", "must be an object")
    use_dynamic = body.get("useDynamicInventory")
    if use_dynamic is not None and not isinstance(use_dynamic, bool):
        raise InvalidRequest("useDynamicInventory", "must be true or false")
    spec_repository: dict[str, Any] = {
        "url": validate_repository_url(repository.get("url"), repositories),
        "branch": _branch(repository),
        "defaultPlaybook": validate_playbook(repository.get("defaultPlaybook")),
    }
    credentials = _credentials(repository, secrets)
    if credentials is not None:
        spec_repository["credentials"] = credentials
    spec = {
        "description": _optional_text(body, "description", "description"),
        "executionTtl": _ttl(body),
        "repository": spec_repository,
        "playbookTags": _tags(body, repository),
        "hosts": _hosts(body, secrets),
        "properties": _object_or_merged_list(body.get("properties"), "properties"),
        "callbacks": _callbacks(body, webhooks),
        "useDynamicInventory": bool(use_dynamic),
        "retry": _retry(body),
    }
    if body.get("sshPrivateKey") is not None:
        secrets[SECRET_DEFAULT_KEY] = _secret_key(body["sshPrivateKey"], "sshPrivateKey")
    return JobInput(spec=spec, secrets=secrets)


def render_secret_masks(spec: dict, secret_paths: set[str]) -> dict:
    """The spec as answered: every stored secret shown as MASK at its place, nothing else."""
    repository = dict(spec["repository"])
    if SECRET_REPO_PASSWORD in secret_paths or SECRET_REPO_KEY in secret_paths:
        credentials = dict(repository.get("credentials") or {})
        if SECRET_REPO_PASSWORD in secret_paths:
            credentials["password"] = MASK
        if SECRET_REPO_KEY in secret_paths:
            credentials["sshPrivateKey"] = MASK
        repository["credentials"] = credentials
    hosts = []
    for host in spec["hosts"]:
        shown = {"id": host["id"], "hostVars": host["hostVars"]}
        if host_key_path(host["id"]) in secret_paths:
            shown["sshPrivateKey"] = MASK
        hosts.append(shown)
    rendered = dict(spec, repository=repository, hosts=hosts)
    if SECRET_DEFAULT_KEY in secret_paths:
        rendered["sshPrivateKey"] = MASK
    return rendered
