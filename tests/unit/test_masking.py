"""The masker: every form a known secret takes in printed text is hidden (runner_lambda/masking.py).

Leaks are judged by tests/leaks.py, written apart from the masker: the printed forms of a secret,
and whatever base64 decoding of the output recovers.
"""
from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from runner_lambda.masking import MASK, Masker, secret_forms
from runner_lambda.reporting import EventSink
from tests.leaks import (BACKSLASH, CRLF, MIXED, NON_ASCII, OPENSSH, QUOTE, RSA, SECRET_NAMES, SECRETS,
                         embedded_base64, leaks, lines, printed_forms, variants)


@pytest.fixture(scope="module")
def masker() -> Masker:
    return Masker(SECRETS)


def leaked(text: str) -> dict[str, list[str]]:
    """Which secrets show in `text`, and how."""
    return {secret[:24]: found for secret in SECRETS if (found := leaks(secret, text))}


@pytest.mark.parametrize("secret", SECRETS, ids=SECRET_NAMES)
def test_every_printed_form_of_a_secret_is_masked(masker, secret):
    forms = printed_forms(secret) + embedded_base64(secret)
    for form in forms:
        masked = masker(f"before {form} after")
        assert not leaked(masked), (form[:60], masked[:200])
        assert masked.startswith("before ") and masked.endswith(" after") and MASK in masked
    print(f"{len(forms)} printed forms tried, none leaked")


def test_a_pem_key_as_ansible_prints_it_in_a_debug_msg(masker):
    # The msg as JSON (the newlines become \n), and `to_json` of it printed as JSON (escaped twice)
    for key in (RSA, OPENSSH):
        for text in (json.dumps({"msg": key}, indent=4, ensure_ascii=False),
                     json.dumps({"msg": json.dumps(key.strip())}, indent=4),
                     json.dumps({"stdout_lines": key.splitlines(), "stdout": key}, ensure_ascii=True)):
            assert not leaked(masker(text))


def test_each_line_of_a_key_is_masked_alone_joined_or_with_crlf(masker):
    for key in (RSA, OPENSSH):
        body = lines(key)
        assert len(body) > 3
        assert not leaked(masker(" ".join(body)))
        assert not leaked(masker(body[2]))
        assert not leaked(masker("\r\n".join(key.splitlines())))
        assert not leaked(masker("".join(line + "\r\n" for line in key.splitlines())))
        for line in body:
            assert masker(f"[{line}\r]") == f"[{MASK}\r]"


def test_the_base64_of_a_secret_is_masked_whole_in_both_alphabets_and_wrapped(masker):
    for secret in SECRETS:
        for value in variants(secret):
            data = value.encode("utf-8")
            assert masker(base64.b64encode(data).decode()) == MASK
            assert masker(base64.urlsafe_b64encode(data).decode()) == MASK
            assert masker(base64.b64encode(data).decode().rstrip("=")) == MASK
            wrapped = base64.encodebytes(data).decode()  # the base64 command: 76 columns
            assert not leaked(masker(wrapped)), secret[:20]


def test_a_secret_inside_a_longer_base64_text_is_masked_at_every_alignment(masker):
    for secret in SECRETS:
        for offset in range(3):
            before, after = b"user=admin;"[:offset + 5], b";end"  # 5, 6, 7 bytes: the three alignments
            text = base64.b64encode(before + secret.encode() + after).decode()
            masked = masker(text)
            assert not leaked(masked) and MASK in masked
            # what is left around the mask encodes the neighbours (and at most a few bits of the secret)
            assert len(masked) - len(MASK) <= (len(before) + len(after)) * 4 // 3 + 6


def test_passwords_with_quotes_backslashes_and_non_ascii_in_the_ways_tools_print_them(masker):
    for secret in (QUOTE, BACKSLASH, NON_ASCII, MIXED):
        for text in (secret, json.dumps(secret), json.dumps(secret, ensure_ascii=False), repr(secret),
                     json.dumps(json.dumps(secret)), quote(secret, safe=""), f"url=https://u:{quote(secret)}@h/"):
            masked = masker(text)
            assert not leaked(masked) and secret not in masked, text
    # `echo -e` of a password holding \n and \u00e9 prints them interpreted
    assert masker("back\\slash\n-and-é") == MASK


def test_what_json_escaping_would_turn_into_a_secret_is_masked_before(masker):
    # A secret that is itself escaped text (here a surrogate pair as JSON writes it) appears when
    # the plain text is serialised; the masker looks at the text as JSON will write it.
    secret = "emoji-\\ud83d\\ude00-key"
    own = Masker([secret])
    masked = own.mask_strings({"msg": "emoji-😀-key"})
    assert secret not in json.dumps(masked) and MASK in masked["msg"]


def test_overlapping_secrets_are_masked_together_leaving_no_fragment():
    masked = Masker(["1234abcd", "abcdefgh"])("x1234abcdefghx")
    assert masked == f"x{MASK}x"


def test_the_longest_form_is_masked_at_a_position():
    mask = Masker(["hunter22", "hunter2222"])
    assert mask("pw=hunter2222 and hunter22") == f"pw={MASK} and {MASK}"
    assert Masker(["abc"])("abc") == "abc"  # too short to mask without mangling ordinary text


def test_short_lines_of_a_multi_line_secret_are_not_masked_alone():
    mask = Masker(["abc\nlonger-line-here\n"])
    assert mask("abc and longer-line-here") == f"abc and {MASK}"


def test_every_string_of_a_structure_is_masked_keys_and_numbers_too():
    mask = Masker(["s3cret-value", "12345678"])
    masked = mask.mask_strings({"s3cret-value": ["a s3cret-value", ("t", 12345678)], "n": 7, "ok": True,
                                "none": None, "other": Exotic()})
    assert masked == {MASK: [f"a {MASK}", ["t", MASK]], "n": 7, "ok": True, "none": None, "other": f"<{MASK}>"}


class Exotic:
    def __str__(self) -> str:
        return "<s3cret-value>"


def test_secret_forms_are_counted_and_bounded():
    counts = {name: len(secret_forms(secret)) for name, secret in
              (("rsa", RSA), ("openssh", OPENSSH), ("quote", QUOTE), ("non-ascii", NON_ASCII), ("crlf", CRLF))}
    print("masked forms per secret:", counts)
    assert all(count >= 8 for count in counts.values())
    assert counts["rsa"] < 1000  # a few hundred forms per key, not thousands: one regular expression compiles fast
    assert secret_forms("abc") == set()


def test_an_event_is_masked_in_every_field_before_it_is_serialised(masker):
    sink = EventSink("e-1", 1, masker, retention_days=1, flush_seconds=3600)
    try:
        item = sink.build({
            "event": "runner_on_ok", "counter": 7, "created": "2026-01-01T00:00:00",
            "stdout": f"ok: [web1] => {json.dumps({'msg': RSA}, indent=4)}",
            "event_data": {"host": "web1", "task": f"deploy with {QUOTE}", "play": f"play {NON_ASCII}",
                           "res": {"msg": MIXED, "stdout_lines": RSA.splitlines(), BACKSLASH: 1,
                                   "b64": base64.b64encode(OPENSSH.encode()).decode()},
                           "task_args": f"password={QUOTE}"}})
    finally:
        sink.close()
    assert int(item.seq) == 1_000_007 and item.host == "web1" and item.task == f"deploy with {MASK}"
    data = json.loads(item.data)
    assert data["play"] == f"play {MASK}" and data["res"]["msg"] == MASK and MASK in data["res"]
    for text in (item.stdout, item.task, item.data, json.dumps(data), json.dumps(data, ensure_ascii=False)):
        assert not leaked(text)
