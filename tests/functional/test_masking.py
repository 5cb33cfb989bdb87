"""Masking on the real event path: the worker's EventSink writes ansible-runner events carrying
every form of several secrets; the events route, the log route, the events table and the signed
webhooks (notices queued as the worker queues them, sent by the sender to a real receiver) are
then searched for any of them. (git's errors and status reasons: tests/e2e/test_masking_http.py.)
"""
from __future__ import annotations

import json
import sys

import boto3

from chalicelib.executions import states
from chalicelib.platform import aws
from chalicelib.platform import wiring as services
from chalicelib.platform.config import get_settings
from chalicelib.platform.models import Execution
from runner_lambda.masking import Masker, secret_forms
from runner_lambda.reporting import EventSink
from tests.functional.test_webhooks import receiver  # noqa: F401 - the fixture
from tests.leaks import SECRETS, embedded_base64, leaks, printed_forms, strings

CHUNK = 12000  # characters of forms per event


def tried_forms(masker: Masker) -> list[tuple[str, str]]:
    """(secret, form): the printed forms of tests/leaks.py, embedded base64, and the masker's own."""
    found: dict[str, str] = {}
    for secret in SECRETS:
        for form in printed_forms(secret) + embedded_base64(secret):
            found.setdefault(form, secret)
    own = {secret: secret_forms(secret) for secret in SECRETS}
    for form in masker.forms:
        found.setdefault(form, next(secret for secret in SECRETS if form in own[secret]))
    return sorted(((secret, form) for form, secret in found.items()), key=lambda pair: pair[1])


def carrying(forms: list[str], counter: int) -> dict:
    """An ansible-runner event with `forms` in every place a playbook puts text: 8 places."""
    joined = " | ".join(forms)
    return {"event": "runner_on_ok", "counter": counter, "created": "2026-01-01T00:00:00.000000",
            "stdout": f"ok: [web1] => {json.dumps({'msg': joined}, indent=4, ensure_ascii=False)}",
            "event_data": {"host": "web1", "task": f"task {joined}", "play": f"play {joined}",
                           "task_args": f"msg={joined}",
                           "res": {"msg": joined, "stdout_lines": forms, "stderr": f"x{joined}y",
                                   **{f"key {form}": 1 for form in forms}}}}


PLACES = 8


def texts_of(raw: bytes) -> str:
    """A JSON answer as bytes on the wire and as the strings a client decodes."""
    text = raw.decode("utf-8")
    try:
        return text + "\x00" + "\x00".join(strings(json.loads(text)))
    except ValueError:
        return text


def drain(sender) -> None:
    """Handle every message of the callback queue, as the callback_sender function does."""
    sqs, url = aws.client("sqs"), get_settings().callback_queue_url
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return
        for message in batch:
            sender.handle(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_no_form_of_a_known_secret_leaves_through_events_the_log_or_webhooks(client, receiver):  # noqa: F811
    base, got = receiver
    masker = Masker(SECRETS)
    tried = tried_forms(masker)
    execution = Execution("j-mask", "e-mask", account_alias="DEMO", created_time=1, status=states.RUNNING,
                          attempt=1, callbacks=json.dumps([{"url": f"{base}/200", "level": "DEBUG"}]), notify_seq=0)
    execution.save()
    notifier = services.notifier()
    sink = EventSink("e-mask", 1, masker, retention_days=1, flush_seconds=3600,
                     on_flush=lambda batch: notifier.events(execution, states.RUNNING, [int(e.seq) for e in batch]))
    chunks, chunk = [], []
    for _, form in tried:
        chunk.append(form)
        if sum(map(len, chunk)) > CHUNK:
            chunks.append(chunk)
            chunk = []
    chunks.append(chunk)
    for counter, forms in enumerate(chunks, start=1):
        sink.add(carrying(forms, counter))
    # and one event too large to keep whole: its data is stored as a truncated preview
    sink.add(carrying([form for _, form in tried[:40]] + ["filler " * 4000], len(chunks) + 1))
    sink.close()
    drain(services.sender())

    path = "/jobs/DEMO/j-mask/executions/e-mask"
    events = client.get(f"{path}/events?after=-1&size=1000")
    assert events.status == 200 and len(events.body["results"]) == len(chunks) + 1
    assert events.body["results"][-1]["event_data"]["truncated"] is True
    log = client.get(f"{path}/log")
    webhooks = [raw for (_, _, raw) in got]
    assert len(webhooks) == len(chunks) + 1  # every event, posted once to the DEBUG callback
    stored = json.dumps(boto3.client("dynamodb", region_name="us-east-1").scan(
        TableName=get_settings().table("ExecutionEventsTable"))["Items"])
    outputs = {"events": texts_of(events.raw), "log": log.raw.decode("utf-8"), "table": stored,
               **{f"webhook {index}": texts_of(raw) for index, raw in enumerate(webhooks)}}
    leaked = [(where, form[:40]) for where, text in outputs.items() for _, form in tried if form in text]
    leaked += [(where, secret[:20], how) for where, text in outputs.items() for secret in SECRETS
               for how in leaks(secret, text)]
    report = (f"secret forms tried: {len(tried)} forms of {len(SECRETS)} secrets, in {PLACES} places of "
              f"{len(chunks) + 1} events, read back through {len(outputs)} outputs; leaked: {len(leaked)}")
    print(report, file=sys.stderr)
    assert leaked == [], (report, leaked[:10])
    assert "********" in log.raw.decode()
