"""The users of an account over the API: shapes, errors, the last administrator, token revocation."""
from __future__ import annotations

import json
import threading

import pytest
import yaml

from chalicelib import admin
from chalicelib.auth import users
from chalicelib.platform.errors import Conflict
from chalicelib.platform.models import Account, User
from chalicelib.auth.tokens import Principal, issue_token
from tests.functional.conftest import token_for
from tests.unit.test_openapi import SPEC_PATH, assert_valid, schema_validator

SPEC = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))

BASE = "/users/DEMO"
PASSWORD = "a-fine-password-1"
USER_FIELDS = {"username", "accountAlias", "role", "createdTime"}


def login(client, username: str, password: str):
    return client.anonymous.post("/authentication/login", {"username": username, "password": password})


def assert_no_password(answer, *passwords: str) -> None:
    text = json.dumps(answer.body)
    assert "$argon2" not in text and "passwordHash" not in text and "password" not in text.lower(), text
    for password in passwords:
        assert password not in text


def test_create_list_get_update_delete_answer_the_documented_shapes(client):
    created = client.post(BASE, {"username": "ops@demo", "password": PASSWORD, "role": "OPERATOR"})
    assert created.status == 201, created.body
    assert set(created.body) == USER_FIELDS
    assert created.body["username"] == "ops@demo" and created.body["accountAlias"] == "DEMO"
    assert created.body["role"] == "OPERATOR" and isinstance(created.body["createdTime"], int)
    assert_no_password(created, PASSWORD)
    assert_valid(SPEC, "User", created.body)

    listed = client.get(BASE)
    assert listed.status == 200
    assert [user["username"] for user in listed.body["users"]] == ["demo-user", "ops@demo"]
    assert all(set(user) == USER_FIELDS for user in listed.body["users"])
    assert {user["username"]: user["role"] for user in listed.body["users"]} == {
        "demo-user": "ACCOUNT_ADMIN", "ops@demo": "OPERATOR"}
    assert_no_password(listed, PASSWORD)
    assert_valid(SPEC, "UserList", listed.body)

    got = client.get(f"{BASE}/ops@demo")
    assert got.status == 200 and got.body == created.body

    demoted = client.put(f"{BASE}/ops@demo", {"role": "VIEWER"})
    assert demoted.status == 200 and demoted.body == {**created.body, "role": "VIEWER"}
    repassworded = client.put(f"{BASE}/ops@demo", {"password": "another-password-2"})
    assert repassworded.status == 200 and repassworded.body["role"] == "VIEWER"
    assert_no_password(repassworded, "another-password-2")
    assert login(client, "ops@demo", PASSWORD).status == 401
    logged_in = login(client, "ops@demo", "another-password-2")
    assert logged_in.status == 200 and logged_in.body["roles"] == ["VIEWER"]

    assert client.delete(f"{BASE}/ops@demo").status == 204
    missing = client.get(f"{BASE}/ops@demo")
    assert missing.status == 404
    assert_valid(SPEC, "Error", missing.body)
    assert login(client, "ops@demo", "another-password-2").status == 401
    assert [user["username"] for user in client.get(BASE).body["users"]] == ["demo-user"]


BAD_CREATES = [
    ({"password": PASSWORD, "role": "VIEWER"}, "username"),
    ({"username": "has space", "password": PASSWORD, "role": "VIEWER"}, "username"),
    ({"username": "x@demo", "role": "VIEWER"}, "password"),
    ({"username": "x@demo", "password": "eleven-char", "role": "VIEWER"}, "password"),
    ({"username": "x@demo", "password": "p" * 257, "role": "VIEWER"}, "password"),
    ({"username": "x@demo", "password": 123456789012, "role": "VIEWER"}, "password"),
    ({"username": "x@demo", "password": PASSWORD}, "role"),
    ({"username": "x@demo", "password": PASSWORD, "role": "ROOT"}, "role"),
    ({"username": "x@demo", "password": PASSWORD, "role": "viewer"}, "role"),
    ([], "body"),
]


def test_a_bad_create_or_update_is_a_400_naming_the_field(client):
    for body, field in BAD_CREATES:
        if field != "body":
            assert not schema_validator(SPEC, "UserInput").is_valid(body), body
        answer = client.post(BASE, body)
        assert answer.status == 400, (body, answer.body)
        assert answer.body["code"] == "InvalidRequest" and answer.body["field"] == field, (body, answer.body)
        assert PASSWORD not in json.dumps(answer.body)
    assert client.get(f"{BASE}/x@demo").status == 404
    # the bounds themselves are accepted; updates are validated the same way
    assert client.post(BASE, {"username": "a@demo", "password": "p" * 12, "role": "VIEWER"}).status == 201
    assert client.post(BASE, {"username": "b@demo", "password": "p" * 256, "role": "VIEWER"}).status == 201
    for body, field in (({}, "body"), ({"password": "short"}, "password"), ({"role": "ADMIN"}, "role"),
                        ({"role": "OPERATOR", "password": "p" * 257}, "password"), ([], "body")):
        answer = client.put(f"{BASE}/a@demo", body)
        assert (answer.status, answer.body["field"]) == (400, field), (body, answer.body)
    assert client.get(f"{BASE}/a@demo").body["role"] == "VIEWER"


def test_usernames_are_global_and_another_accounts_user_is_not_revealed(client):
    # GIVEN other-user, a user of account OTHER
    taken = client.post(BASE, {"username": "other-user", "password": PASSWORD, "role": "VIEWER"})
    assert taken.status == 409 and taken.body["code"] == "Conflict"
    assert "OTHER" not in json.dumps(taken.body)
    assert client.post(BASE, {"username": "demo-user", "password": PASSWORD, "role": "VIEWER"}).status == 409
    # THEN DEMO's administrator can neither see nor touch it
    for answer in (client.get(f"{BASE}/other-user"), client.put(f"{BASE}/other-user", {"role": "VIEWER"}),
                   client.delete(f"{BASE}/other-user")):
        assert answer.status == 404 and "OTHER" not in json.dumps(answer.body)
    assert "other-user" not in json.dumps(client.get(BASE).body)
    assert User.get("other-user").account_alias == "OTHER"
    # AND another account's users are another account's path
    assert client.get("/users/OTHER").status == 403
    assert client.post("/users/OTHER", {"username": "x@other", "password": PASSWORD, "role": "VIEWER"}).status == 403


def test_the_last_account_admin_can_be_neither_deleted_nor_demoted(client):
    for answer in (client.delete(f"{BASE}/demo-user"), client.put(f"{BASE}/demo-user", {"role": "OPERATOR"})):
        assert answer.status == 409 and answer.body["code"] == "Conflict", answer.body
        assert "ACCOUNT_ADMIN" in answer.body["message"]
    assert client.get(f"{BASE}/demo-user").body["role"] == "ACCOUNT_ADMIN"
    # a second administrator: now the first may step down, and that revokes its own token
    assert client.post(BASE, {"username": "boss@demo", "password": PASSWORD, "role": "ACCOUNT_ADMIN"}).status == 201
    assert Account.get("DEMO").admin_count == 2
    assert client.put(f"{BASE}/demo-user", {"role": "OPERATOR"}).status == 200
    assert client.get(BASE).status == 401
    boss = login(client, "boss@demo", PASSWORD).body["bearerToken"]
    assert client.delete(f"{BASE}/boss@demo", token=boss).status == 409
    assert client.put(f"{BASE}/demo-user", {"role": "ACCOUNT_ADMIN"}, token=boss).status == 200
    assert Account.get("DEMO").admin_count == 2
    assert client.delete(f"{BASE}/boss@demo", token=boss).status == 204
    assert Account.get("DEMO").admin_count == 1
    # AND an account stored before the count existed gets it counted by the first guarded write
    users.create_user("old@demo", PASSWORD, "DEMO")
    User.get("old@demo").update(actions=[User.roles.set([])])  # an administrator stored before roles
    Account.get("DEMO").update(actions=[Account.admin_count.remove()])
    admin = login(client, "demo-user", "correct-horse-battery").body["bearerToken"]
    assert client.delete(f"{BASE}/old@demo", token=admin).status == 204
    assert Account.get("DEMO").admin_count == 1
    assert client.delete(f"{BASE}/demo-user", token=admin).status == 409


def test_two_concurrent_demotions_leave_one_admin(client, monkeypatch):
    # GIVEN two administrators, each demoted by a request that read both still administrators
    users.create_user("boss@demo", PASSWORD, "DEMO")
    assert Account.get("DEMO").admin_count == 2
    both_read = threading.Barrier(2, timeout=60)
    first_read = threading.local()
    load = users._load

    def load_then_wait(account, username):
        user = load(account, username)
        if not getattr(first_read, "done", False):
            first_read.done = True
            both_read.wait()
        return user

    monkeypatch.setattr(users, "_load", load_then_wait)
    outcomes: dict[str, object] = {}

    def demote(username):
        try:
            outcomes[username] = users.update_user("DEMO", username, {"role": "OPERATOR"})["role"]
        except Conflict as conflict:
            outcomes[username] = conflict

    threads = [threading.Thread(target=demote, args=(name,)) for name in ("demo-user", "boss@demo")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # THEN exactly one demotion committed, and the account keeps one administrator
    assert sorted(type(outcome).__name__ for outcome in outcomes.values()) == ["Conflict", "str"], outcomes
    admins = [user.username for user in User.scan() if user.account_alias == "DEMO" and user.roles == ["ACCOUNT_ADMIN"]]
    assert len(admins) == 1
    assert Account.get("DEMO", consistent_read=True).admin_count == 1


def test_a_token_stops_working_at_once_when_its_user_is_deleted_or_changed(client, aws_stack):
    for name in ("gone@demo", "repass@demo", "demoted@demo", "same@demo"):
        users.create_user(name, PASSWORD, "DEMO", "OPERATOR")
    tokens = {name: token_for(aws_stack.signing_key, name) for name in ("gone@demo", "repass@demo", "demoted@demo",
                                                                         "same@demo")}
    for token in tokens.values():
        assert client.get("/jobs/DEMO", token=token).status == 200
    # WHEN one is deleted, one gets a new password, one a new role, one the role it has
    assert client.delete(f"{BASE}/gone@demo").status == 204
    assert client.put(f"{BASE}/repass@demo", {"password": "new-password-123"}).status == 200
    assert client.put(f"{BASE}/demoted@demo", {"role": "VIEWER"}).status == 200
    assert client.put(f"{BASE}/same@demo", {"role": "OPERATOR"}).status == 200
    # THEN the first three tokens are refused on the next request; the last still works
    for name in ("gone@demo", "repass@demo", "demoted@demo"):
        answer = client.get("/jobs/DEMO", token=tokens[name])
        assert answer.status == 401 and answer.body["code"] == "Unauthenticated", (name, answer.body)
    assert client.get("/jobs/DEMO", token=tokens["same@demo"]).status == 200
    # AND a user created again under a deleted name does not revive the old tokens
    users.create_user("gone@demo", PASSWORD, "DEMO", "OPERATOR")
    assert client.get("/jobs/DEMO", token=tokens["gone@demo"]).status == 401
    # AND a new login gets a working token with the new role
    fresh = login(client, "demoted@demo", PASSWORD).body
    assert fresh["roles"] == ["VIEWER"] and client.get("/jobs/DEMO", token=fresh["bearerToken"]).status == 200
    # AND a token claiming another account than its user's is refused
    moved = Principal("same@demo", "OTHER", ("OPERATOR",), users.token_version(User.get("same@demo")))
    answer = client.get("/jobs/OTHER", token=issue_token(aws_stack.signing_key, moved, 60))
    assert answer.status == 401 and answer.body["code"] == "Unauthenticated"


def test_a_user_stored_before_token_versions_logs_in_and_its_tokens_are_revocable(client):
    # GIVEN a user item as the service stored it before versions (no tokenVersion, no role)
    User.get("demo-user").update(actions=[User.token_version.remove(), User.roles.set([])])
    token = login(client, "demo-user", "correct-horse-battery").body["bearerToken"]
    assert client.get("/jobs/DEMO", token=token).status == 200
    assert client.get(BASE, token=token).body["users"][0]["role"] == "ACCOUNT_ADMIN"
    # WHEN its password changes, the legacy token is refused
    assert client.put(f"{BASE}/demo-user", {"password": "brand-new-password"}, token=token).status == 200
    assert client.get("/jobs/DEMO", token=token).status == 401


def test_the_admin_command_creates_admins_by_default_and_takes_a_role(client, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password-1\n"))
    assert admin.main(["create-user", "--account", "DEMO", "--username", "second-admin", "--password-stdin"]) == 0
    assert admin.main(["create-user", "--account", "DEMO", "--username", "watcher", "--role", "VIEWER"]) == 0
    out = capsys.readouterr().out
    assert "(ACCOUNT_ADMIN)" in out and "(VIEWER)" in out
    assert client.get(f"{BASE}/second-admin").body["role"] == "ACCOUNT_ADMIN"
    assert client.get(f"{BASE}/watcher").body["role"] == "VIEWER"
    assert Account.get("DEMO").admin_count == 2
    # a role that is not one, or a password too short, is refused
    with pytest.raises(SystemExit):
        admin.main(["create-user", "--account", "DEMO", "--username", "x", "--role", "ROOT"])
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert admin.main(["create-user", "--account", "DEMO", "--username", "y", "--password-stdin"]) == 1
    assert "password" in capsys.readouterr().err
    # --reset of a user keeps its role unless told, and revokes its tokens
    monkeypatch.setattr("sys.stdin", io.StringIO("b-long-password-2\n"))
    assert admin.main(["create-user", "--account", "DEMO", "--username", "watcher", "--reset",
                       "--password-stdin"]) == 0
    assert client.get(f"{BASE}/watcher").body["role"] == "VIEWER"
    assert login(client, "watcher", "b-long-password-2").status == 200
