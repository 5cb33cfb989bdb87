"""Login, tokens and the authorizer, through the gateway as a client meets them."""
import io
import time

from chalicelib import admin
from tests.functional.conftest import make_account, token_for


def test_login_answers_the_reference_shape(client):
    answer = client.anonymous.post("/authentication/login", {"username": "demo-user", "password": "correct-horse-battery"})
    assert answer.status == 200
    assert set(answer.body) == {"userName", "accountAlias", "roles", "bearerToken"}
    assert answer.body["userName"] == "demo-user" and answer.body["accountAlias"] == "DEMO"
    token = answer.body["bearerToken"]
    assert client.anonymous.get("/jobs/DEMO", token=token).status == 200


def test_wrong_password_and_unknown_user_get_the_same_401(client):
    wrong = client.anonymous.post("/authentication/login", {"username": "demo-user", "password": "nope-nope-nope"})
    unknown = client.anonymous.post("/authentication/login", {"username": "ghost", "password": "nope-nope-nope"})
    assert wrong.status == unknown.status == 401
    assert wrong.body == unknown.body == {"code": "Unauthenticated", "message": "invalid username or password"}


def test_login_without_password_is_a_400_naming_it(client):
    answer = client.anonymous.post("/authentication/login", {"username": "demo-user"})
    assert answer.status == 400 and answer.body["field"] == "password"


def test_login_with_malformed_json_is_a_400(client):
    answer = client.anonymous.post("/authentication/login", raw=b"{not json")
    assert answer.status == 400 and answer.body["field"] == "body" and answer.body["code"] == "InvalidRequest"


def test_missing_token_is_401_with_our_error_body(client):
    answer = client.anonymous.get("/jobs/DEMO")
    assert answer.status == 401
    assert answer.body["code"] == "Unauthenticated" and "Authorization" in answer.body["message"]


def test_garbage_token_is_401(client):
    answer = client.anonymous.get("/jobs/DEMO", token="not.a.jwt")
    assert answer.status == 401 and answer.body["code"] == "Unauthenticated"


def test_expired_token_is_401_saying_so(client, aws_stack):
    old = token_for(aws_stack.signing_key, "demo-user", 60, now=time.time() - 120)
    answer = client.anonymous.get("/jobs/DEMO", token=old)
    assert answer.status == 401 and "expired" in answer.body["message"]


def test_token_forged_with_another_key_is_401(client):
    forged = token_for("f" * 64, "demo-user")
    assert client.anonymous.get("/jobs/DEMO", token=forged).status == 401


def test_health_needs_no_token(client):
    answer = client.anonymous.get("/health")
    assert answer.status == 200 and answer.body == {"status": "ok"}


def test_unknown_route_is_a_404_in_our_shape(client):
    answer = client.get("/nothing/here")
    assert answer.status == 404 and answer.body["code"] == "NotFound"


def test_unsupported_method_is_a_405_in_our_shape(client):
    answer = client.request("PATCH", "/jobs/DEMO")
    assert answer.status == 405 and answer.body["code"] == "MethodNotAllowed"


def test_passwords_are_stored_as_argon2_hashes(client):
    from chalicelib.platform.models import User
    stored = User.get("demo-user").password_hash
    assert stored.startswith("$argon2id$") and "correct-horse-battery" not in stored


def test_admin_command_creates_an_account_and_a_user_that_can_log_in(client, monkeypatch, capsys):
    assert admin.main(["create-account", "ACME"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-passw0rd\n"))
    assert admin.main(["create-user", "--account", "ACME", "--username", "ops@acme", "--password-stdin"]) == 0
    answer = client.anonymous.post("/authentication/login", {"username": "ops@acme", "password": "s3cret-passw0rd"})
    assert answer.status == 200 and answer.body["accountAlias"] == "ACME"
    assert "s3cret-passw0rd" not in capsys.readouterr().out


def test_admin_command_refuses_a_user_of_a_missing_account(client, capsys):
    assert admin.main(["create-user", "--account", "NOPE", "--username", "x"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_admin_generated_password_is_printed_once_and_works(client, capsys):
    make_account("ZED")
    assert admin.main(["create-user", "--account", "ZED", "--username", "zed-2"]) == 0
    password = capsys.readouterr().out.split("password: ")[1].strip()
    assert client.anonymous.post("/authentication/login", {"username": "zed-2", "password": password}).status == 200


def test_admin_sets_an_accounts_concurrency_limit(client, capsys):
    from chalicelib.platform.models import Account
    assert admin.main(["set-concurrency", "--account", "DEMO", "--limit", "8"]) == 0
    assert Account.get("DEMO").max_concurrent == 8
    assert admin.main(["set-concurrency", "--account", "NOPE", "--limit", "8"]) == 1
    assert admin.main(["set-concurrency", "--account", "DEMO", "--limit", "0"]) == 1
