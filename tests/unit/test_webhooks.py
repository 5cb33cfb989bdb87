"""Callback levels, fan-out, signatures and the address check of webhook URLs (no IO but DNS of literals)."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from chalicelib.callbacks.notices import deliveries, wanted
from chalicelib.callbacks.targets import UnsafeTarget, safe_address
from chalicelib.callbacks.sender import sign
from chalicelib.platform.config import LOCAL_WEBHOOK_RULES, Settings, WebhookRules

ON_AWS = Settings().webhook_rules
IN_LOCAL_MODE = Settings.from_environ({"RUNNER_LOCAL": "1"}).webhook_rules


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


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook", "https://localhost/hook", "https://10.1.2.3/hook", "https://192.168.0.10/hook",
    "https://172.16.5.5/hook", "https://169.254.169.254/latest/meta-data", "https://[::1]/hook",
    "https://[fd00:ec2::254]/hook", "https://0.0.0.0/hook", "http://93.184.216.34/hook",
])
def test_on_aws_private_loopback_metadata_and_plain_http_targets_are_refused(url):
    with pytest.raises(UnsafeTarget):
        safe_address(url, ON_AWS)


def test_on_aws_a_public_https_address_is_used_as_resolved():
    assert safe_address("https://93.184.216.34:8443/hook", ON_AWS) == ("https", "93.184.216.34", 8443)


def test_local_mode_allows_loopback_over_http_but_never_metadata():
    assert safe_address("http://127.0.0.1:9000/x", IN_LOCAL_MODE) == ("http", "127.0.0.1", 9000)
    with pytest.raises(UnsafeTarget):
        safe_address("http://169.254.169.254/latest", IN_LOCAL_MODE)
    with pytest.raises(UnsafeTarget):
        safe_address("ftp://127.0.0.1/x", IN_LOCAL_MODE)


def test_local_mode_is_what_sets_the_permissive_rules():
    assert IN_LOCAL_MODE == LOCAL_WEBHOOK_RULES
    assert ON_AWS == WebhookRules() == Settings.from_environ({"RUNNER_LOCAL": "0"}).webhook_rules
    assert (Settings.from_environ({"RUNNER_LOCAL": "1"}).report_aws_calls, Settings.from_environ({}).report_aws_calls) \
        == (True, False)


def test_loopback_and_private_networks_are_allowed_separately_and_metadata_never():
    loopback = WebhookRules(allow_loopback=True)
    private = WebhookRules(allow_private=True)
    assert safe_address("https://127.0.0.1/x", loopback)[1] == "127.0.0.1"
    assert safe_address("https://10.0.0.5/x", private)[1] == "10.0.0.5"
    for url, rules in (("https://10.0.0.5/x", loopback), ("https://127.0.0.1/x", private),
                       ("https://169.254.169.254/x", WebhookRules(allow_loopback=True, allow_private=True))):
        with pytest.raises(UnsafeTarget):
            safe_address(url, rules)


@pytest.mark.parametrize("url", ["https://10.0.0.5/hook", "https://localhost/hook", "https://169.254.169.254/x"])
def test_a_job_cannot_name_a_private_callback_target_on_aws(url):
    from chalicelib.platform.errors import InvalidRequest
    from chalicelib.jobs.spec import validate_callback_url

    with pytest.raises(InvalidRequest) as raised:
        validate_callback_url(url, ON_AWS, field_name="callbacks[0].url")
    assert raised.value.field == "callbacks[0].url"
    assert validate_callback_url("https://hooks.invalid/runner", ON_AWS, field_name="x")  # checked at send


def test_a_delivery_message_carries_references_never_content():
    message, = deliveries(event("runner_on_failed"), [{"url": "https://a.example/hook", "level": "ERROR"}])
    assert message["delivery"]["notice"] == {"type": "event", "attempt": 1, "seq": 4, "status": "RUNNING",
                                             "timestamp": "2026-11-30T00:00:00.000Z", "eventSeq": 7}
    assert "event" not in message["delivery"] and "accountAlias" not in message["delivery"]
