"""Callback levels, fan-out and signatures (the address rules: test_targets.py)."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from chalicelib.callbacks.notices import deliveries, wanted
from chalicelib.callbacks.sender import sign


def status(value: str) -> dict:
    return {"type": "status", "status": value, "accountAlias": "A", "jobId": "j", "executionId": "e", "attempt": 1,
            "seq": 3, "event": None, "timestamp": "2026-11-30T00:00:00.000Z"}


def event(name: str) -> dict:
    return {"type": "event", "status": "RUNNING", "accountAlias": "A", "jobId": "j", "executionId": "e", "attempt": 1,
            "seq": 4, "event": {"event": name, "seq": 7}, "timestamp": "2026-11-30T00:00:00.000Z"}


@pytest.mark.parametrize("notice, debug, error, result", [
    (status("PENDING"), True, False, False),
    (status("RUNNING"), True, False, False),
    (status("STOPPING"), True, False, False),
    (status("SUCCESS"), True, False, True),
    (status("STOPPED"), True, False, True),
    (status("FAILURE"), True, True, True),
    (status("INIT_FAILURE"), True, True, True),
    (status("KILLED"), True, True, True),
    (event("runner_on_ok"), True, False, False),
    (event("runner_on_failed"), True, True, False),
    (event("runner_on_unreachable"), True, True, False),
    (event("playbook_on_stats"), True, False, False),
])
def test_levels_choose_what_a_callback_receives(notice, debug, error, result):
    assert (wanted("DEBUG", notice), wanted("ERROR", notice), wanted("RESULT", notice)) == (debug, error, result)


def test_a_notice_fans_out_to_the_callbacks_that_want_it_with_stable_delivery_ids():
    callbacks = [{"url": "https://a.example/hook", "level": "DEBUG"}, {"url": "https://b.example/hook", "level": "RESULT"}]
    running = deliveries(status("RUNNING"), callbacks)
    assert [item["delivery"]["url"] for item in running] == ["https://a.example/hook"]
    done = deliveries(status("FAILURE"), callbacks)
    assert [item["delivery"]["level"] for item in done] == ["DEBUG", "RESULT"]
    assert [item["delivery"]["deliveryId"] for item in done] == [item["delivery"]["deliveryId"]
                                                                  for item in deliveries(status("FAILURE"), callbacks)]
    assert len({item["delivery"]["deliveryId"] for item in done}) == 2


def test_the_signature_is_the_hex_hmac_sha256_of_the_raw_body():
    body = b'{"seq":1}'
    assert sign("k3y", body) == "sha256=" + hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    assert sign("k3y", body) != sign("k3y", body + b" ")
    assert sign("k3y", body) != sign("other", body)


def test_a_delivery_message_carries_references_never_content():
    message, = deliveries(event("runner_on_failed"), [{"url": "https://a.example/hook", "level": "ERROR"}])
    assert message["delivery"]["notice"] == {"type": "event", "attempt": 1, "seq": 4, "status": "RUNNING",
                                             "timestamp": "2026-11-30T00:00:00.000Z", "eventSeq": 7}
    assert "event" not in message["delivery"] and "accountAlias" not in message["delivery"]
