"""The token signing key's shape and where it is kept (no IO: the behaviour is in tests/functional)."""
import base64

from chalicelib.auth import users
from chalicelib.auth.signing_key import KEY_BYTES, TOKEN_SIGNING_CONTEXT, SigningKeyMissing, key_text
from chalicelib.platform.models import MODELS, SIGNING_KEY_ITEM, Account, SigningKeyItem
from localmode.emulator import EmulatorState


def test_the_key_item_lives_in_the_accounts_table_under_a_key_no_alias_takes():
    assert MODELS[SigningKeyItem] == MODELS[Account] == "AccountsTable"
    assert SigningKeyItem.account_alias.attr_name == Account.account_alias.attr_name
    assert not users.ACCOUNT_ALIAS.match(SIGNING_KEY_ITEM)


def test_the_key_is_64_characters_of_384_random_bits():
    plaintext = bytes(range(KEY_BYTES))
    text = key_text(plaintext)
    assert KEY_BYTES * 8 == 384 and len(text) == 64 and "=" not in text
    assert base64.urlsafe_b64decode(text) == plaintext


def test_the_context_names_the_purpose_only():
    assert TOKEN_SIGNING_CONTEXT == {"purpose": "token-signing"}


def test_a_missing_key_is_a_401_like_any_invalid_token():
    missing = SigningKeyMissing()
    assert missing.status == 401 and missing.to_body() == {"code": "Unauthenticated",
                                                           "message": "the bearer token is not valid"}


def test_local_modes_state_keeps_the_kms_key_only_and_reads_older_snapshots():
    state = EmulatorState("key-id", b"material")
    assert state.to_json() == {"kmsKeyId": "key-id", "kmsKeyMaterial": base64.b64encode(b"material").decode()}
    older = {**state.to_json(), "signingKey": "a key kept by an older version"}  # ignored: the tables hold it now
    assert EmulatorState.from_json(older) == state
