"""Validation of job bodies: every bad input names its field."""
from __future__ import annotations

import base64
import copy
from dataclasses import replace

import pytest

from chalicelib.platform.errors import InvalidRequest
from chalicelib.jobs.spec import JobInput, parse_job, render_secret_masks
from chalicelib.platform.config import RepositoryRules, Settings
from chalicelib.platform.sealing import MASK
from tests.keyfactory import b64_key

ON_AWS = Settings()
IN_LOCAL_MODE = Settings.from_environ({"RUNNER_LOCAL": "1"})

VALID = {
    "description": "Sample Job",
    "repository": {"url": "https://github.com/org/repo.git", "defaultPlaybook": "site.yml"},
    "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}],
}


def body(**changes):
    document = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        target = document
        *parents, last = dotted.split("__")
        for name in parents:
            target = target[name]
        if value is KeyError:
            target.pop(last, None)
        else:
            target[last] = value
    return document


def parse(document, settings: Settings = ON_AWS) -> JobInput:
    return parse_job(document, settings.repository_rules, settings.webhook_rules)


def rejected(document, settings: Settings = ON_AWS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(document, settings)
    return caught.value


def test_minimal_job_gets_defaults():
    spec = parse(body()).spec
    assert spec["repository"] == {"url": "https://github.com/org/repo.git", "branch": "master",
                                  "defaultPlaybook": "site.yml"}
    assert spec["executionTtl"] is None
    assert spec["playbookTags"] == [] and spec["callbacks"] == [] and spec["properties"] == {}
    assert spec["useDynamicInventory"] is False


@pytest.mark.parametrize("field_path, field", [
    ("repository", "repository"), ("hosts", "hosts"),
    ("repository__url", "repository.url"), ("repository__defaultPlaybook", "repository.defaultPlaybook"),
])
def test_missing_required_field_is_named(field_path, field):
    assert rejected(body(**{field_path: KeyError})).field == field


@pytest.mark.parametrize("url", ["http://github.com/o/r.git", "ftp://host/r.git", "file:///srv/repo",
                                 "github.com/o/r", "https://user:pw@github.com/o/r.git", ""])
def test_non_https_repository_urls_are_rejected_on_aws(url):
    assert rejected(body(repository__url=url)).field == "repository.url"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/r.git", "file:///tmp/repo", "https://h/r.git",
                                 "ssh://git@host/r.git", "git@github.com:org/repo.git"])
def test_local_mode_also_allows_file_and_http(url):
    assert parse(body(repository__url=url), IN_LOCAL_MODE).spec["repository"]["url"] == url


@pytest.mark.parametrize("url", [
    "-oProxyCommand=touch%20x@github.com:org/repo.git", "git@-oProxyCommand=x:org/repo.git",
    "git@github.com:-upload-pack=x", "ssh://-oProxyCommand=x/repo", "ssh://-oProxyCommand=x@host/repo",
    "ssh://git@-host/repo", "https://-h.example.com/r.git", "https://github.com:99999/o/r.git",
    "ext::sh -c touch% /tmp/x", "ext::sh", "fd::17", "https::ext::sh", "file::/srv/repo",
])
def test_what_git_or_ssh_would_read_as_an_option_or_another_transport_is_rejected(url):
    for settings in (ON_AWS, IN_LOCAL_MODE):
        assert rejected(body(repository__url=url), settings).field == "repository.url"


def test_ftp_is_rejected_even_in_local_mode():
    assert rejected(body(repository__url="ftp://h/r.git"), IN_LOCAL_MODE).field == "repository.url"


def test_the_refusal_names_the_schemes_the_rules_allow():
    assert "https:// or ssh://" in rejected(body(repository__url="ftp://h/r.git")).message
    assert "https://, ssh://, http:// or file://" in rejected(body(repository__url="ftp://h/r.git"),
                                                              IN_LOCAL_MODE).message


def test_an_scp_like_address_is_ssh_and_needs_ssh_allowed():
    https_only = replace(ON_AWS, repository_rules=RepositoryRules(schemes=("https",)))
    assert rejected(body(repository__url="git@github.com:org/repo.git"), https_only).field == "repository.url"


@pytest.mark.parametrize("playbook", ["/etc/passwd", "../x.yml", "a/../../x.yml", "..", "-x.yml", "C:\\x.yml"])
def test_playbook_outside_the_repository_is_rejected(playbook):
    assert rejected(body(repository__defaultPlaybook=playbook)).field == "repository.defaultPlaybook"


def test_playbook_path_is_normalized():
    spec = parse(body(repository__defaultPlaybook="./plays//a/../site.yml")).spec
    assert spec["repository"]["defaultPlaybook"] == "plays/site.yml"


def test_ref_is_a_synonym_of_branch():
    document = body()
    document["repository"]["ref"] = "v1.2"
    assert parse(document).spec["repository"]["branch"] == "v1.2"


@pytest.mark.parametrize("branch", ["-upload-pack=x", "--output=/tmp/x", "a..b", "has space", "x~1", ""])
def test_unsafe_branch_names_are_rejected(branch):
    assert rejected(body(repository__branch=branch)).field == "repository.branch"
    document = body()
    document["repository"]["ref"] = branch
    assert rejected(document).field == "repository.ref"


@pytest.mark.parametrize("tags, field", [(["deploy", "-x"], "playbookTags[1]"), ("a,--list-tasks", "playbookTags[1]"),
                                         (["--skip-tags=all"], "playbookTags[0]")])
def test_a_tag_may_not_start_with_a_dash(tags, field):
    assert rejected(body(playbookTags=tags)).field == field
    assert rejected(body(repository__playbookTags=tags)).field == "repository." + field


def test_unknown_callback_level_is_rejected():
    error = rejected(body(callbacks=[{"url": "https://hooks.example.com/x", "level": "VERBOSE"}]))
    assert error.field == "callbacks[0].level"


def test_callback_level_defaults_to_debug_and_accepts_bare_urls():
    spec = parse(body(callbacks=["https://h.example.com/a", {"url": "https://h.example.com/b", "level": "result"}])).spec
    assert spec["callbacks"] == [{"url": "https://h.example.com/a", "level": "DEBUG"},
                                 {"url": "https://h.example.com/b", "level": "RESULT"}]


def test_callback_placeholder_of_the_reference_is_rejected():
    assert rejected(body(callbacks=[{"url": "your callback webhook", "level": "DEBUG"}])).field == "callbacks[0].url"


@pytest.mark.parametrize("ttl", [0, -5, 1.5, "180", True, 10**9])
def test_execution_ttl_must_be_a_positive_integer(ttl):
    assert rejected(body(executionTtl=ttl)).field == "executionTtl"


def test_host_without_id_is_rejected():
    assert rejected(body(hosts=[{"hostVars": {}}])).field == "hosts[0].id"


def test_duplicate_host_ids_are_rejected():
    assert rejected(body(hosts=[{"id": "web"}, {"id": "web"}])).field == "hosts[1].id"


@pytest.mark.parametrize("value", ["TUlJRW93SUJBQUtDQVF........WE81ZnQ1dg==", "not base64 !",
                                   base64.b64encode(b"hello").decode(),
                                   base64.b64encode(b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n").decode()])
def test_ssh_private_key_must_be_base64_of_a_pem_key(value):
    assert rejected(body(hosts=[{"id": "web", "sshPrivateKey": value}])).field == "hosts[0].sshPrivateKey"
    assert rejected(body(sshPrivateKey=value)).field == "sshPrivateKey"


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_real_keys_are_accepted_and_kept_apart_from_the_spec(kind):
    key = b64_key(kind)
    parsed = parse(body(sshPrivateKey=key, hosts=[{"id": "web", "sshPrivateKey": key}]))
    assert "sshPrivateKey" not in parsed.spec and "sshPrivateKey" not in parsed.spec["hosts"][0]
    assert parsed.secrets["sshPrivateKey"].startswith("-----BEGIN")
    assert parsed.secrets["hosts[web].sshPrivateKey"].startswith("-----BEGIN")


def test_repository_password_is_a_secret_and_needs_a_username():
    parsed = parse(body(repository__credentials={"username": "u", "password": "p4ss"}))
    assert parsed.spec["repository"]["credentials"] == {"username": "u"}
    assert parsed.secrets == {"repository.credentials.password": "p4ss"}
    assert rejected(body(repository__credentials={"password": "p"})).field == "repository.credentials.username"


@pytest.mark.parametrize("document", [[], "x", 3, None])
def test_body_must_be_an_object(document):
    assert rejected(document).field == "body"


def test_playbook_tags_are_accepted_at_top_level_or_in_the_repository():
    assert parse(body(playbookTags=["a", "b"])).spec["playbookTags"] == ["a", "b"]
    assert parse(body(repository__playbookTags=["c"])).spec["playbookTags"] == ["c"]
    assert parse(body(playbookTags="a, b")).spec["playbookTags"] == ["a", "b"]


def test_masks_are_rendered_where_secrets_are_stored():
    spec = parse(body(hosts=[{"id": "web"}, {"id": "db"}],
                      repository__credentials={"username": "u"})).spec
    shown = render_secret_masks(spec, {"hosts[db].sshPrivateKey", "repository.credentials.password", "sshPrivateKey"})
    assert shown["hosts"][1]["sshPrivateKey"] == MASK and "sshPrivateKey" not in shown["hosts"][0]
    assert shown["repository"]["credentials"] == {"username": "u", "password": MASK}
    assert shown["sshPrivateKey"] == MASK
