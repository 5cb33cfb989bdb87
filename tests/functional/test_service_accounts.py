"""Service accounts over the API: credentials proven at write time, the password never returned."""
from __future__ import annotations

import json

import pytest

from chalicelib.platform import aws
from chalicelib.auth import users
from chalicelib.platform.models import ServiceAccount
from tests.functional.conftest import make_account

CANARY = "canary-Sa-Pa55word-7731"
BASE = "/serviceAccounts/DEMO"


@pytest.fixture
def robot(client):
    """A user of DEMO whose password is the canary."""
    users.create_user("robot@demo", CANARY, "DEMO")
    return {"alias": "nightly", "username": "robot@demo", "password": CANARY}


def test_create_answers_the_document_without_the_password(client, robot):
    answer = client.post(BASE, robot)
    assert answer.status == 201, answer.body
    assert answer.body["alias"] == "nightly"
    assert answer.body["accountAlias"] == "DEMO"
    assert answer.body["username"] == "robot@demo"
    assert answer.body["password"] == "********"
    assert answer.body["id"]
    assert CANARY not in json.dumps(answer.body)


def test_the_password_is_sealed_at_rest(client, robot):
    client.post(BASE, robot)
    raw = aws.client("dynamodb").scan(TableName=ServiceAccount.Meta.table_name)["Items"]
    assert len(raw) == 1
    assert CANARY not in json.dumps(raw)


def test_list_get_update_delete(client, robot):
    client.post(BASE, robot)
    client.post(BASE, {**robot, "alias": "another"})
    assert client.get(BASE).body == {"accounts": ["another", "nightly"]}
    got = client.get(f"{BASE}/nightly")
    assert got.status == 200 and got.body["password"] == "********"
    users.create_user("robot2@demo", "second-password-1", "DEMO")
    updated = client.put(f"{BASE}/nightly", {"username": "robot2@demo", "password": "second-password-1"})
    assert updated.status == 200, updated.body
    assert updated.body["username"] == "robot2@demo"
    assert client.delete(f"{BASE}/nightly").status == 204
    assert client.get(f"{BASE}/nightly").status == 404
    assert client.get(BASE).body == {"accounts": ["another"]}


def test_a_masked_password_keeps_the_stored_one_if_it_still_logs_in(client, robot):
    client.post(BASE, robot)
    kept = client.put(f"{BASE}/nightly", {"username": "robot@demo", "password": "********"})
    assert kept.status == 200, kept.body
    users.create_user("robot@demo", "changed-password-9", "DEMO", replace=True)
    stale = client.put(f"{BASE}/nightly", {"username": "robot@demo", "password": "********"})
    assert stale.status == 400 and stale.body["field"] == "password"


@pytest.mark.parametrize("credentials", [
    {"username": "robot@demo", "password": "wrong-password-0"},
    {"username": "nobody@demo", "password": CANARY},
    {"username": "other-user", "password": "correct-horse-battery"},  # a user of another account
])
def test_credentials_that_do_not_log_in_to_the_account_are_a_400(client, robot, credentials):
    answer = client.post(BASE, {"alias": "bad", **credentials})
    assert answer.status == 400
    assert answer.body["field"] == "password"
    assert client.get(f"{BASE}/bad").status == 404
    client.post(BASE, robot)
    assert client.put(f"{BASE}/nightly", credentials).status == 400


@pytest.mark.parametrize("body, field", [
    ({"username": "robot@demo", "password": CANARY}, "alias"),
    ({"alias": "has space", "username": "robot@demo", "password": CANARY}, "alias"),
    ({"alias": "x", "password": CANARY}, "username"),
    ({"alias": "x", "username": "robot@demo"}, "password"),
    ({"alias": "x", "username": "robot@demo", "password": 5}, "password"),
    ([], "body"),
])
def test_bad_bodies_name_the_field(client, robot, body, field):
    answer = client.post(BASE, body)
    assert answer.status == 400
    assert answer.body["field"] == field
    assert CANARY not in json.dumps(answer.body)


def test_a_duplicate_alias_is_a_409(client, robot):
    assert client.post(BASE, robot).status == 201
    assert client.post(BASE, robot).status == 409


def test_missing_ones_are_404(client, robot):
    assert client.get(f"{BASE}/ghost").status == 404
    assert client.put(f"{BASE}/ghost", {"username": "robot@demo", "password": CANARY}).status == 404
    assert client.delete(f"{BASE}/ghost").status == 404


def test_another_accounts_token_is_refused(client, robot):
    client.post(BASE, robot)
    for method, body in (("GET", None), ("POST", robot)):
        assert client.other.request(method, BASE, body).status == 403
    assert client.other.get(f"{BASE}/nightly").status == 403
    assert client.other.delete(f"{BASE}/nightly").status == 403
    assert client.anonymous.get(BASE).status == 401
    make_account("THIRD")
    assert client.get("/serviceAccounts/THIRD").status == 403
