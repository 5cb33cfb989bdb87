"""The token signing key: a KMS data key sealed in the accounts table, made once, read everywhere."""
from __future__ import annotations

import base64
import threading

import pytest
from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist

from chalicelib.auth import users
from chalicelib.auth.signing_key import (
    TOKEN_SIGNING_CONTEXT, IssuerSigningKey, SigningKey, SigningKeyMissing, ensure_signing_key,
)
from chalicelib.auth.tokens import Principal, issue_token, verify_token
from chalicelib.platform import aws
from chalicelib.platform import wiring as services
from chalicelib.platform.config import get_settings
from chalicelib.platform.errors import InvalidRequest
from chalicelib.platform.models import SIGNING_KEY_ITEM, SigningKeyItem
from tests.functional.conftest import ApiClient, make_account

PRINCIPAL = Principal("demo-user", "DEMO", ("ACCOUNT_ADMIN",), "a-token-version")


@pytest.fixture
def no_key(aws_stack):
    """The stack before anyone logged in: no signing key stored, none cached."""
    SigningKeyItem(SIGNING_KEY_ITEM).delete()
    services.reset()
    return aws_stack


def stored() -> SigningKeyItem | None:
    try:
        return SigningKeyItem.get(SIGNING_KEY_ITEM, consistent_read=True)
    except DoesNotExist:
        return None


def issuer() -> IssuerSigningKey:
    """A signing key as a fresh API process holds it."""
    return IssuerSigningKey(aws.client("kms"), get_settings().kms_key_id)


def test_the_reserved_key_can_never_be_an_account(aws_stack):
    assert not users.ACCOUNT_ALIAS.match(SIGNING_KEY_ITEM)
    assert stored() is not None  # the item exists, and still:
    with pytest.raises(InvalidRequest):
        users.ensure_account(SIGNING_KEY_ITEM)
    with pytest.raises(InvalidRequest):
        users.create_user("intruder", "a-long-password", SIGNING_KEY_ITEM)
    with pytest.raises(InvalidRequest):
        users.set_concurrency(SIGNING_KEY_ITEM, 3)


def test_only_the_sealed_key_is_stored_and_it_opens_only_with_its_context(aws_stack):
    item = stored()
    key = aws_stack.signing_key
    assert len(key) == 64 and set(item.attribute_values) == {"account_alias", "sealed_key", "created_time"}
    assert key not in item.sealed_key
    kms = aws.client("kms")
    blob = base64.b64decode(item.sealed_key)
    assert base64.urlsafe_b64encode(kms.decrypt(CiphertextBlob=blob, EncryptionContext=TOKEN_SIGNING_CONTEXT)[
        "Plaintext"]).rstrip(b"=").decode() == key
    # The contexts the worker may decrypt with (a job's secrets, a run's keys), or none, open nothing.
    for context in ({"accountAlias": "DEMO", "jobId": "a-job"}, {"accountAlias": "DEMO"}, {}):
        with pytest.raises(ClientError) as refused:
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
        assert refused.value.response["Error"]["Code"] == "InvalidCiphertextException"


def test_the_authorizer_never_creates_the_key_and_denies_every_token_before_it_exists(no_key, gateway):
    make_account("DEMO")
    reader = SigningKey(aws.client("kms"))
    with pytest.raises(SigningKeyMissing) as missing:
        reader.get()
    assert missing.value.status == 401
    forged = issue_token("f" * 64, PRINCIPAL, 3600)
    answer = ApiClient(gateway).get("/jobs/DEMO", token=forged)
    assert answer.status == 401 and answer.body["code"] == "Unauthenticated"
    assert stored() is None


def test_the_first_login_creates_the_key_and_its_token_passes_the_authorizer(no_key, gateway):
    make_account("DEMO")
    anonymous = ApiClient(gateway)
    assert anonymous.get("/jobs/DEMO", token=issue_token("f" * 64, PRINCIPAL, 3600)).status == 401  # none yet
    login = anonymous.post("/authentication/login", {"username": "demo-user", "password": "correct-horse-battery"})
    assert login.status == 200, login.body
    assert stored() is not None
    token = login.body["bearerToken"]
    assert anonymous.get("/jobs/DEMO", token=token).status == 200  # the absence was not cached
    # Another login (the key cached) and another process (read back) sign alike.
    again = anonymous.post("/authentication/login", {"username": "demo-user", "password": "correct-horse-battery"})
    assert verify_token(SigningKey(aws.client("kms")).get(), again.body["bearerToken"]).username == "demo-user"


def test_racing_first_uses_create_one_key_and_all_use_it(no_key):
    racers = 8
    start = threading.Barrier(racers)
    keys: list[str] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            own = issuer()  # one per thread: as many cold processes
            start.wait()
            keys.append(own.get())
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=first_use) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(keys) == racers and len(set(keys)) == 1
    assert SigningKey(aws.client("kms")).get() == keys[0]  # what was stored is what they all got
    assert [item.account_alias for item in SigningKeyItem.scan() if item.account_alias.startswith("#")] == [
        SIGNING_KEY_ITEM]


def test_tokens_verify_across_instances_and_the_key_survives_rereading(aws_stack):
    first, second = issuer(), issuer()
    token = issue_token(first.get(), PRINCIPAL, 3600)
    assert verify_token(second.get(), token) == PRINCIPAL
    assert verify_token(SigningKey(aws.client("kms")).get(), token) == PRINCIPAL
    assert first.get() == second.get() == aws_stack.signing_key
    before = stored().sealed_key
    services.reset()
    assert services.signing_key().get() == aws_stack.signing_key
    assert stored().sealed_key == before  # read again, not made again


def test_the_key_is_read_once_per_process(aws_stack):
    key = SigningKey(aws.client("kms"))
    with aws.counting_calls() as calls:
        key.get()
    assert calls == ["dynamodb.GetItem", "kms.Decrypt"]
    with aws.counting_calls() as calls:
        key.get()
    assert calls == []


def test_a_deploy_creates_the_key_once_and_never_opens_it(no_key):
    kms = aws.client("kms")
    with aws.counting_calls() as calls:
        assert ensure_signing_key(kms, get_settings().kms_key_id) is True
    assert calls == ["dynamodb.GetItem", "kms.GenerateDataKey", "dynamodb.PutItem"]
    sealed = stored().sealed_key
    with aws.counting_calls() as calls:
        assert ensure_signing_key(kms, get_settings().kms_key_id) is False
    assert calls == ["dynamodb.GetItem"] and stored().sealed_key == sealed
