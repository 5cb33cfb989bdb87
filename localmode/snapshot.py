"""Local mode's persistence: the emulator's tables and keys saved to .runner/ and loaded back."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from localmode.emulator import EmulatorState

SNAPSHOT_NAME = "state.json"
SNAPSHOT_VERSION = 1


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically (a crash leaves the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def dump_tables(dynamodb: Any, tables: dict[str, str]) -> dict[str, list]:
    """Every item of every table, keyed by the table's logical id."""
    dumped: dict[str, list] = {}
    paginator = dynamodb.get_paginator("scan")
    for logical_id, name in tables.items():
        dumped[logical_id] = [item for page in paginator.paginate(TableName=name, ConsistentRead=True)
                              for item in page.get("Items", [])]
    return dumped


def load_tables(dynamodb: Any, tables: dict[str, str], dumped: dict[str, list]) -> int:
    """Write saved items back; returns how many were written."""
    written = 0
    for logical_id, items in dumped.items():
        name = tables.get(logical_id)
        if name is None:
            continue
        for start in range(0, len(items), 25):
            batch = [{"PutRequest": {"Item": item}} for item in items[start:start + 25]]
            request = {name: batch}
            while request:
                answer = dynamodb.batch_write_item(RequestItems=request)
                request = answer.get("UnprocessedItems") or {}
            written += len(batch)
    return written


def save_snapshot(directory: Path, state: EmulatorState, tables: dict[str, list]) -> Path:
    """Save tables and emulator state to directory/state.json (mode 0600)."""
    path = directory / SNAPSHOT_NAME
    document = {"version": SNAPSHOT_VERSION, "emulator": state.to_json(), "tables": tables}
    write_private(path, json.dumps(document))
    return path


def read_snapshot(directory: Path) -> tuple[EmulatorState, dict[str, list]] | None:
    """The saved state, or None when there is none (or it is unreadable, which is reported)."""
    path = directory / SNAPSHOT_NAME
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unknown snapshot version {document.get('version')!r}")
        return EmulatorState.from_json(document["emulator"]), document.get("tables", {})
    except (ValueError, KeyError, TypeError) as exc:
        broken = path.with_name(path.name + ".unreadable")
        os.replace(path, broken)
        print(f"runner: the saved state {path} could not be read ({exc}); moved it to {broken} and started empty")
        return None
