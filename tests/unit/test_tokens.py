"""Bearer tokens: issued, verified, refused when forged or expired."""
import time

import jwt
import pytest

from chalicelib.platform.errors import Unauthenticated
from chalicelib.auth.tokens import Principal, bearer_token, issue_token, verify_token

KEY = "k" * 64
ALICE = Principal("alice", "DEMO", ("ACCOUNT_ADMIN",), "5f1d0c4e9a7b4e2c8d3f6a1b2c3d4e5f")


def test_a_token_speaks_for_its_principal():
    assert verify_token(KEY, issue_token(KEY, ALICE, 60)) == ALICE


def test_an_expired_token_is_refused():
    token = issue_token(KEY, ALICE, 60, now=time.time() - 3600)
    with pytest.raises(Unauthenticated, match="expired"):
        verify_token(KEY, token)


def test_a_token_signed_with_another_key_is_refused():
    with pytest.raises(Unauthenticated):
        verify_token(KEY, issue_token("x" * 64, ALICE, 60))


def test_an_unsigned_token_is_refused():
    forged = jwt.encode({"sub": "alice", "acc": "DEMO", "iss": "runner", "iat": 1, "exp": 2**40}, None, algorithm="none")
    with pytest.raises(Unauthenticated):
        verify_token(KEY, forged)


def test_a_token_without_a_version_is_refused():
    unversioned = jwt.encode({"sub": "alice", "acc": "DEMO", "iss": "runner", "iat": 1, "exp": 2**40}, KEY,
                             algorithm="HS256")
    with pytest.raises(Unauthenticated):
        verify_token(KEY, unversioned)
    with pytest.raises(Unauthenticated):
        verify_token(KEY, issue_token(KEY, Principal("alice", "DEMO", ("ACCOUNT_ADMIN",), ""), 60))


def test_the_default_lifetime_is_twelve_hours():
    from chalicelib.platform.config import Settings
    assert Settings.from_environ({}).token_ttl_seconds == 12 * 3600
    assert Settings.from_environ({"RUNNER_TOKEN_TTL_SECONDS": "60"}).token_ttl_seconds == 60


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer   "])
def test_malformed_authorization_headers_are_refused(header):
    with pytest.raises(Unauthenticated):
        bearer_token(header)


def test_bearer_scheme_is_case_insensitive():
    assert bearer_token("bearer abc") == "abc"
