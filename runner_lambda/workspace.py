"""One attempt's private_data_dir: the checkout, the inventory and the key files; removed after."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
ALL = "all"


class WorkspaceError(Exception):
    """The inventory or the playbook path cannot be prepared (an INIT_FAILURE)."""


def host_vars_for(host_id: str, host_vars: dict) -> dict:
    """A host's variables as the inventory gets them.

    A local connection gets the interpreter running ansible (as ansible's implicit localhost
    does), since interpreter discovery can pick a broken one; `localhost` without a connection
    is a local connection, not SSH to ourselves.
    """
    variables = dict(host_vars)
    if host_id in LOCAL_NAMES and "ansible_connection" not in variables:
        variables["ansible_connection"] = "local"
    if variables.get("ansible_connection") == "local":
        variables.setdefault("ansible_python_interpreter", "{{ ansible_playbook_python }}")
    return variables


def build_inventory(hosts: list[dict], targets: list[str], key_files: dict[str, str],
                    default_key_file: str | None) -> tuple[dict, str | None]:
    """The JSON inventory and the --limit of one run.

    `hosts` are the inventory's hosts ({"id", "hostVars"}, the job's first), `targets` the ids
    this run is for, `key_files` host id -> private key file, `default_key_file` the job's key.
    """
    inventory_hosts: dict[str, dict] = {}
    all_vars: dict = {}
    for host in hosts:
        if host["id"] == ALL:
            all_vars.update(host.get("hostVars") or {})
        elif host["id"] not in inventory_hosts:
            inventory_hosts[host["id"]] = host_vars_for(host["id"], host.get("hostVars") or {})
    for target in targets:
        if target != ALL and target not in inventory_hosts:
            inventory_hosts[target] = host_vars_for(target, {})
    for host_id, key_file in key_files.items():
        if host_id in inventory_hosts:
            inventory_hosts[host_id].setdefault("ansible_ssh_private_key_file", key_file)
        elif host_id == ALL:
            all_vars.setdefault("ansible_ssh_private_key_file", key_file)
    if default_key_file:
        all_vars.setdefault("ansible_ssh_private_key_file", default_key_file)
    inventory = {ALL: {"hosts": inventory_hosts, "vars": all_vars}}
    limit = None if ALL in targets or not targets else ",".join(targets)
    return inventory, limit


class Workspace:
    """A private directory for one attempt; everything in it is removed on exit."""

    def __init__(self, root: str | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="runner-", dir=root))
        self.path.chmod(0o700)
        self.project = self.path / "project"
        self.scratch = self.path / "scratch"
        self._keys = self.path / "keys"

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def write_key(self, name: str, pem: str) -> str:
        """Write a private key readable by its owner only; answer its path."""
        self._keys.mkdir(mode=0o700, exist_ok=True)
        path = self._keys / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(pem if pem.endswith("\n") else pem + "\n")
        return str(path)

    def write_inventory(self, inventory: dict) -> str:
        """Write the inventory file; answer its path."""
        directory = self.path / "inventory"
        directory.mkdir(exist_ok=True)
        path = directory / "hosts.json"
        path.write_text(json.dumps(inventory, indent=1), encoding="utf-8")
        return str(path)

    def playbook(self, relative: str) -> str:
        """The playbook's path inside the checkout; WorkspaceError when missing or outside it."""
        project = self.project.resolve()
        candidate = (self.project / relative).resolve()
        if project not in candidate.parents:
            raise WorkspaceError(f"playbook {relative!r} leaves the repository")
        if not candidate.is_file():
            raise WorkspaceError(f"playbook {relative!r} does not exist in the repository")
        return str(candidate.relative_to(project))
