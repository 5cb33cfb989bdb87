"""Galaxy requirements: which sources are allowed, and what the cache key depends on (no IO)."""
from __future__ import annotations

import pytest

from chalicelib.platform.config import LOCAL_REPOSITORY_RULES, RepositoryRules
from runner_lambda.galaxy import (
    GalaxyError, RequirementsFile, Source, cache_key, check_sources, collection_source, resolve, role_source,
)

AWS_RULES = RepositoryRules()
SHA = "a" * 40


def check(source: Source, rules: RepositoryRules = AWS_RULES) -> None:
    check_sources([source], rules)


@pytest.mark.parametrize("entry, origin, location, version", [
    ("geerlingguy.apache", "galaxy", "geerlingguy.apache", ""),
    ("geerlingguy.apache,1.2.3", "galaxy", "geerlingguy.apache", "1.2.3"),
    ({"src": "git+https://git.example.com/org/role.git", "version": "main"}, "git",
     "https://git.example.com/org/role.git", "main"),
    ({"src": "https://git.example.com/org/role.git", "scm": "git"}, "git", "https://git.example.com/org/role.git", ""),
    ({"src": "git+git@git.example.com:org/role.git"}, "git", "git@git.example.com:org/role.git", ""),
    ({"role": "geerlingguy.java"}, "galaxy", "geerlingguy.java", ""),
])
def test_role_entries_read_as_galaxy_reads_them(entry, origin, location, version):
    source = role_source(entry, "requirements.yml roles[0]")
    assert (source.origin, source.location, source.version) == (origin, location, version)
    check(source)


@pytest.mark.parametrize("entry, words", [
    ({"src": "https://example.com/role.tar.gz"}, "neither a git source"),
    ({"src": "/etc"}, "neither a git source"),
    ({"src": "hg+https://example.com/role"}, "only git"),
    ({"include": "other.yml"}, "include"),
    (["a list"], "a string or a mapping"),
])
def test_role_entries_that_are_no_git_source_nor_galaxy_role_are_refused(entry, words):
    with pytest.raises(GalaxyError, match=words):
        role_source(entry, "roles/requirements.yml roles[0]")


@pytest.mark.parametrize("entry, origin, location, version", [
    ("community.general", "galaxy", "community.general", ""),
    ({"name": "community.general", "version": ">=8.0.0"}, "galaxy", "community.general", ">=8.0.0"),
    ({"name": "ansible.utils", "source": "https://galaxy.ansible.com/"}, "galaxy", "ansible.utils", ""),
    ({"name": "git+https://git.example.com/org/coll.git,v1"}, "git", "https://git.example.com/org/coll.git", "v1"),
    ({"name": "https://git.example.com/org/coll.git#/sub", "type": "git", "version": "main"}, "git",
     "https://git.example.com/org/coll.git", "main"),
])
def test_collection_entries_read_as_galaxy_reads_them(entry, origin, location, version):
    source = collection_source(entry, "collections/requirements.yml collections[0]")
    assert (source.origin, source.location, source.version) == (origin, location, version)
    check(source)


@pytest.mark.parametrize("entry, words", [
    ({"name": "ns.coll", "source": "https://galaxy.evil.example"}, "not the Galaxy server"),
    ({"name": "/opt/collections/ns-coll.tar.gz", "type": "file"}, "type 'file'"),
    ({"name": "/etc", "type": "dir"}, "type 'dir'"),
    ({"name": "https://example.com/ns-coll.tar.gz"}, "type 'url'"),
    ({"name": "not-a-name"}, "namespace.name"),
])
def test_collection_entries_other_than_git_or_the_galaxy_server_are_refused(entry, words):
    with pytest.raises(GalaxyError, match=words):
        collection_source(entry, "requirements.yml collections[0]")


@pytest.mark.parametrize("url", ["file:///srv/roles/x", "http://git.example.com/x.git", "ext::sh -c id",
                                 "https://-oProxyCommand=x/y", "https://user:pw@git.example.com/x.git"])
def test_on_aws_git_sources_follow_the_repository_rules(url):
    with pytest.raises(GalaxyError, match="roles\\[0\\]"):
        check(Source("role", "git", url, "", "roles/requirements.yml roles[0]"))


def test_file_sources_only_where_file_urls_are_allowed():
    source = role_source({"src": "file:///etc"}, "requirements.yml roles[0]")
    with pytest.raises(GalaxyError, match="file:// sources are not allowed"):
        check(source)
    check(source, LOCAL_REPOSITORY_RULES)
    check(role_source({"src": "git+file:///srv/role"}, "requirements.yml roles[1]"), LOCAL_REPOSITORY_RULES)


def test_a_version_may_not_read_as_an_option():
    with pytest.raises(GalaxyError, match="must not start with '-'"):
        check(Source("role", "git", "https://git.example.com/r.git", "--upload-pack=x", "roles[0]"))


def listing(refs: dict[str, str]):
    def ls_remote(url: str, patterns: list[str]) -> str:
        return "".join(f"{sha}\t{ref}\n" for ref, sha in refs.items() if ref in patterns)
    return ls_remote


def test_a_git_source_resolves_to_the_commit_its_branch_or_tag_names():
    source = Source("role", "git", "https://git.example.com/r.git", "v1", "roles[0]")
    tagged = listing({"refs/tags/v1": "1" * 40, "refs/tags/v1^{}": "2" * 40, "refs/heads/main": "3" * 40})
    assert resolve(source, tagged, "2026-01-01").endswith("2" * 40)  # the commit an annotated tag points at
    head = Source("role", "git", "https://git.example.com/r.git", "", "roles[0]")
    assert resolve(head, listing({"HEAD": "4" * 40}), "2026-01-01").endswith("4" * 40)
    pinned = Source("role", "git", "https://git.example.com/r.git", SHA, "roles[0]")
    assert resolve(pinned, listing({}), "2026-01-01").endswith(SHA)
    with pytest.raises(GalaxyError, match="no branch or tag 'gone'"):
        resolve(Source("role", "git", "https://git.example.com/r.git", "gone", "roles[0]"), listing({}), "d")


def test_a_moved_branch_changes_the_key():
    files = [RequirementsFile("roles/requirements.yml", None, b"- src: git+https://h/r.git\n  version: main\n")]
    source = Source("role", "git", "https://h/r.git", "main", "roles[0]")
    before = cache_key(files, [resolve(source, listing({"refs/heads/main": "1" * 40}), "d")], "2.19.14")
    after = cache_key(files, [resolve(source, listing({"refs/heads/main": "2" * 40}), "d")], "2.19.14")
    assert before != after
    assert before == cache_key(files, [resolve(source, listing({"refs/heads/main": "1" * 40}), "d")], "2.19.14")
    other = [RequirementsFile("roles/requirements.yml", None, b"- src: git+https://h/r.git\n  version: main \n")]
    assert cache_key(other, [resolve(source, listing({"refs/heads/main": "1" * 40}), "d")], "2.19.14") != before


def test_an_unpinned_galaxy_requirement_is_keyed_for_the_day_only():
    unpinned = Source("collection", "galaxy", "community.general", ">=8", "collections[0]")
    pinned = Source("collection", "galaxy", "community.general", "8.1.0", "collections[0]")
    assert resolve(unpinned, listing({}), "2026-01-01") != resolve(unpinned, listing({}), "2026-01-02")
    assert resolve(pinned, listing({}), "2026-01-01") == resolve(pinned, listing({}), "2026-01-02")
