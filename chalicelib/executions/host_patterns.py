"""Ansible's host patterns (`--limit`), matched against a run's hosts without ansible (no IO).

The API does not ship ansible-core (the worker image does), so a start checks its `limit` with
this matcher, which follows `ansible.inventory.manager.InventoryManager` (ansible-core 2.19) on
the inventory a run gets: every host directly in `all` (and so in `ungrouped`), no other group.
tests/unit/test_host_patterns.py compares it with ansible's own matcher.

- `,` separates patterns; without a comma, `:` does (unless the whole pattern is one address,
  such as `host:22` or an IPv6 address); brackets `[...]` stay whole.
- Plain patterns are a union, then each `&pattern` intersects, then each `!pattern` excludes,
  whatever the order written; only `&`/`!` patterns start from `all`.
- One pattern: `all` (or `*`), a host name, a shell glob (`web*`, `db[12]`), or `~regex`
  (matched at the start of the name), with an optional subscript `[0]`, `[1:]`, `[0:2]` on
  what it matches.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import re

ALL, UNGROUPED = "all", "ungrouped"
# Names ansible creates an implicit localhost for; not hosts of a job unless it names them.
LOCALHOST = ("localhost", "127.0.0.1", "::1")

_COLON_PARTS = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_HOST_AND_PORT = re.compile(r"^[A-Za-z0-9._-]+:[0-9]+$|^\[[^\]]+\](:[0-9]+)?$")
_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")


class PatternError(ValueError):
    """A host pattern ansible would refuse (a bad regex, a subscript out of range)."""


def split_pattern(pattern: str) -> list[str]:
    """The single patterns of a host pattern, as ansible's split_host_pattern cuts it."""
    if "," in pattern:
        parts = pattern.split(",")
    elif _is_one_address(pattern.strip()):
        parts = [pattern]
    else:
        parts = _COLON_PARTS.findall(pattern)
    return [part.strip() for part in parts if part.strip()]


def _is_one_address(text: str) -> bool:
    if _HOST_AND_PORT.match(text):
        return True
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _ordered(patterns: list[str]) -> list[str]:
    regular = [p for p in patterns if p[0] not in "!&"]
    intersections = [p for p in patterns if p[0] == "&"]
    exclusions = [p for p in patterns if p[0] == "!"]
    return (regular or [ALL]) + intersections + exclusions


def _compile(expression: str) -> re.Pattern:
    try:
        return re.compile(expression[1:] if expression.startswith("~") else fnmatch.translate(expression))
    except re.error as exc:
        raise PatternError(f"{expression!r} is not a valid pattern ({exc})") from None


def _subscript(pattern: str) -> tuple[str, tuple[int, int | None] | None]:
    if pattern.startswith("~"):
        return pattern, None
    found = _SUBSCRIPT.match(pattern)
    if not found:
        return pattern, None
    expression, index, start, _separator, end = found.groups()
    if index:
        return expression, (int(index), None)
    return expression, (int(start), int(end) if end else -1)


def _one(pattern: str, hosts: list[str]) -> list[str]:
    """The hosts one pattern (without its & or !) matches, in inventory order."""
    expression, subscript = _subscript(pattern)
    regex = _compile(expression)
    results: list[str] = []
    groups = [group for group in (ALL, UNGROUPED) if regex.match(group)]
    for _group in groups:
        results.extend(hosts)
    if not groups or expression.startswith("~") or any(special in expression for special in ".?*["):
        results.extend(host for host in hosts if regex.match(host))
    if not results or not subscript:
        return results
    start, end = subscript
    try:
        if end is None:
            return [results[start]]
        return results[start:(len(results) - 1 if end == -1 else end) + 1]
    except IndexError:
        raise PatternError(f"no host matches the subscript of {pattern!r}") from None


def match_hosts(pattern: str, hosts: list[str]) -> list[str]:
    """The hosts (of `hosts`, in their order) that `--limit pattern` keeps."""
    selected: list[str] = []
    for part in _ordered(split_pattern(pattern)):
        if part in hosts:
            selected.append(part)
            continue
        matched = _one(part[1:] if part[0] in "!&" else part, hosts)
        if part[0] == "!":
            selected = [host for host in selected if host not in set(matched)]
        elif part[0] == "&":
            selected = [host for host in selected if host in set(matched)]
        else:
            selected.extend(host for host in matched if host not in selected)
    kept = set(selected)
    return [host for host in hosts if host in kept]
