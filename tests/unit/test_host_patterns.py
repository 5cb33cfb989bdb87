"""The API's host-pattern matcher (chalicelib/executions/host_patterns.py) against ansible's own."""
from __future__ import annotations

import pytest

from chalicelib.executions.host_patterns import PatternError, match_hosts, split_pattern

HOSTS = ["web1", "web2", "db1", "db.example.com", "10.0.0.5", "alpha"]

PATTERNS = [
    "web1", "web1,db1", "web1:db1", "web*", "web*:&*1", "web*:!web2", "all:!db*", "!web1", "&web*",
    "*", "all", "~web[12]", "~^d", "~b", "db.*", "*.com", "10.0.0.*", "web[12]", "web[!1]", "web?",
    "all[0]", "web*[1]", "*[1:]", "all[0:2]", "all[-1]", "nothing", "nothing,web1", "web1,,db1",
    " web1 , db1 ", "ungrouped", "al*", "ungr*", "&web1,!web1", "web1:web2:!web2", "db1:22",
    "all,!*", "web1,web1",
]


def ansible_matches(pattern: str, hosts: list[str]) -> list[str]:
    """What ansible-playbook --limit keeps of an inventory holding `hosts` in `all`."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    inventory = InventoryManager(loader=DataLoader(), sources=[])
    for host in hosts:
        inventory.add_host(host, group="all")
    inventory.reconcile_inventory()
    inventory.subset(pattern)
    return [host.name for host in inventory.get_hosts("all")]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_matches_as_ansible_does(pattern):
    pytest.importorskip("ansible")
    assert sorted(match_hosts(pattern, HOSTS)) == sorted(ansible_matches(pattern, HOSTS))


def test_keeps_the_order_of_the_hosts():
    assert match_hosts("db1,web2,web1", HOSTS) == ["web1", "web2", "db1"]


def test_splits_on_commas_else_on_colons_but_keeps_brackets_and_addresses_whole():
    assert split_pattern("a, b ,,c") == ["a", "b", "c"]
    assert split_pattern("a:b:&c:!d") == ["a", "b", "&c", "!d"]
    assert split_pattern("web[1:3]:db") == ["web[1:3]", "db"]
    assert split_pattern("fe80::1") == ["fe80::1"]
    assert split_pattern("host:22") == ["host:22"]


def test_a_bad_regex_or_subscript_is_an_error():
    with pytest.raises(PatternError):
        match_hosts("~web(", HOSTS)
    with pytest.raises(PatternError):
        match_hosts("web*[9]", HOSTS)
