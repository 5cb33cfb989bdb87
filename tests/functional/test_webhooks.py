"""The webhook sender against a real HTTP receiver on loopback: 410 Gone, dead letters, signatures."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chalicelib.platform import aws
from chalicelib.platform import wiring as services
from chalicelib.callbacks.notices import deliveries
from chalicelib.platform.config import get_settings
from chalicelib.platform.models import Delivery, Execution
from chalicelib.callbacks.sender import sign


@pytest.fixture
def receiver():
    """Answers each path with the status its name says (/410, /500, /200); records what it got."""
    got: list[tuple[str, dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            got.append((self.path, dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(int(self.path.strip("/")))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", got
    server.shutdown()


def stored_execution(callbacks: list[dict], execution_id: str = "e-1", account: str = "DEMO",
                     status: str = "FAILURE") -> Execution:
    """An ended execution of `account` whose job had `callbacks`, ten notice seqs handed out."""
    execution = Execution("j", execution_id, account_alias=account, created_time=1, status=status, attempt=1,
                          callbacks=json.dumps(callbacks), notify_seq=10)
    execution.save()
    return execution


def delivery(url: str, seq: int, **extra) -> dict:
    """The queue message of one delivery of FAILURE (seq `seq`) to `url`, as the sender makes them."""
    callbacks = [{"url": url, "level": "ERROR"}]
    stored_execution(callbacks)
    notice = {"type": "status", "accountAlias": "DEMO", "jobId": "j", "executionId": "e-1", "attempt": 1,
              "seq": seq, "status": "FAILURE", "event": None, "timestamp": "2026-11-27T00:00:00.000Z"}
    message = deliveries(notice, callbacks)[0]
    message["delivery"].update(extra)
    return message


def records() -> dict[int, Delivery]:
    return {int(item.seq): item for item in Delivery.query("e-1") if item.seq is not None}


def test_a_signed_post_is_delivered_once(client, receiver):
    base, got = receiver
    services.sender().handle(delivery(f"{base}/200", 1))
    (path, headers, raw), = got
    secret = client.get("/webhookSecret/DEMO").body["webhookSecret"]
    assert headers["X-Runner-Signature"] == sign(secret, raw)
    assert headers["X-Runner-Delivery"] == json.loads(raw)["deliveryId"]
    assert records()[1].state == "DELIVERED" and records()[1].status_code == 200


def test_410_stops_sending_to_that_url_for_the_execution(client, receiver):
    base, got = receiver
    services.sender().handle(delivery(f"{base}/410", 1))
    services.sender().handle(delivery(f"{base}/410", 2))
    assert len(got) == 1
    assert (records()[1].state, records()[2].state) == ("GONE", "SKIPPED")


def test_a_failure_is_retried_later_then_dead_lettered_when_the_hour_is_over(client, receiver):
    base, got = receiver
    sqs = aws.client("sqs")
    services.sender().handle(delivery(f"{base}/500", 1))
    assert records()[1].state == "RETRYING" and records()[1].tries == 1
    requeued = sqs.receive_message(QueueUrl=get_settings().callback_queue_url, WaitTimeSeconds=3)["Messages"]
    assert json.loads(requeued[0]["Body"])["delivery"]["tries"] == 1
    an_hour_ago = int(time.time() * 1000) - 3_700_000
    services.sender().handle(delivery(f"{base}/500", 2, tries=12, firstTry=an_hour_ago))
    assert records()[2].state == "FAILED" and records()[2].tries == 13
    dead = sqs.receive_message(QueueUrl=get_settings().callback_dead_letter_queue_url)["Messages"]
    assert json.loads(dead[0]["Body"])["delivery"]["notice"]["seq"] == 2


def test_status_changes_made_through_the_api_are_noticed_in_order(client, tmp_path):
    from tests.functional.test_executions import git, job_body

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "master")
    (repo / "site.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks: []\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "empty")
    job = client.post("/jobs/DEMO", job_body(repo, callbacks=[{"url": "http://127.0.0.1:9/x", "level": "DEBUG"}])).body[0]
    execution = client.post(f"/jobs/DEMO/{job['id']}/start", {}).body
    assert client.post(f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}/kill", {}).status == 202
    sqs = aws.client("sqs")
    changes = []
    while True:
        batch = sqs.receive_message(QueueUrl=get_settings().callback_queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            break
        changes += [json.loads(message["Body"])["statusChange"] for message in batch]
    assert [(change["status"], change["seq"]) for change in changes] == [("PENDING", 1), ("KILLED", 2)]


def test_the_sender_signs_only_what_the_tables_back(client, receiver):
    # GIVEN an ended execution of OTHER whose callback is a receiver, and one of DEMO
    base, got = receiver
    theirs = [{"url": f"{base}/200", "level": "DEBUG"}]
    stored_execution(theirs, execution_id="e-other", account="OTHER")
    # WHEN forged messages arrive (as a worker could queue them): a delivery to a URL the
    # execution does not have, content and account of the forger's choosing, a status it never
    # had, seqs never handed out, and a status change of an execution that does not exist
    forged = [
        {"delivery": {"jobId": "j", "executionId": "e-other", "url": f"{base}/200?stolen", "level": "DEBUG",
                      "notice": {"type": "status", "attempt": 1, "seq": 1, "status": "FAILURE"}}},
        {"delivery": {"jobId": "j", "executionId": "e-other", "url": f"{base}/200", "level": "DEBUG",
                      "accountAlias": "DEMO", "event": {"stdout": "forged"},
                      "notice": {"type": "status", "attempt": 1, "seq": 2, "status": "SUCCESS"}}},
        {"delivery": {"jobId": "j", "executionId": "e-other", "url": f"{base}/200", "level": "DEBUG",
                      "notice": {"type": "status", "attempt": 1, "seq": 99, "status": "FAILURE"}}},
        {"delivery": {"jobId": "j", "executionId": "e-other", "url": f"{base}/200", "level": "DEBUG",
                      "notice": {"type": "event", "attempt": 1, "seq": 3, "eventSeq": 12345, "status": "RUNNING"}}},
        {"statusChange": {"jobId": "j", "executionId": "e-none", "attempt": 1, "status": "FAILURE"}},
        {"events": {"jobId": "j", "executionId": "e-other", "attempt": 1, "eventSeqs": [1], "firstSeq": 50}},
    ]
    for message in forged:
        services.sender().handle(message)
    # THEN nothing was sent
    assert got == []
    # AND a genuine reference is sent, signed with the stored account's secret, whatever it claims
    services.sender().handle({"delivery": {"jobId": "j", "executionId": "e-other", "url": f"{base}/200",
                                           "level": "DEBUG", "accountAlias": "DEMO",
                                           "notice": {"type": "status", "attempt": 1, "seq": 4,
                                                      "status": "RUNNING"}}})
    (_, headers, raw), = got
    assert json.loads(raw)["accountAlias"] == "OTHER" and json.loads(raw)["status"] == "RUNNING"
    assert headers["X-Runner-Signature"] == sign(client.other.get("/webhookSecret/OTHER").body["webhookSecret"], raw)


def queued(queue_url: str) -> list[dict]:
    messages = aws.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def test_a_url_that_now_names_a_refused_address_is_not_sent_nor_retried(client, receiver):
    # GIVEN stored callbacks that the job's validation would refuse today (a private address,
    # local mode's own API port)
    base, got = receiver
    for seq, url in enumerate(["http://10.0.0.1/x", "http://127.0.0.1:8000/jobs/DEMO"], start=1):
        services.sender().handle(delivery(url, seq))
        # THEN the delivery fails at once, says why, and is neither requeued nor dead-lettered
        record = records()[seq]
        assert (record.state, record.tries, record.status_code) == ("FAILED", 1, None)
        assert record.last_error.startswith("refused: ")
    assert queued(get_settings().callback_queue_url) == [] and queued(get_settings().callback_dead_letter_queue_url) == []
    # AND a reachable URL still is delivered
    services.sender().handle(delivery(f"{base}/200", 3))
    assert records()[3].state == "DELIVERED" and len(got) == 1


def test_the_post_goes_to_the_address_checked_never_to_the_name_resolved_again(client, receiver, monkeypatch):
    # GIVEN a name whose DNS answers a checked loopback address first, then another address
    # (DNS rebinding), where another receiver listens on the same port
    base, got = receiver
    port = int(base.rsplit(":", 1)[1])
    other: list[str] = []

    class Other(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            other.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    rebound = ThreadingHTTPServer(("127.0.0.2", port), Other)
    threading.Thread(target=rebound.serve_forever, daemon=True).start()
    real, answers = socket.getaddrinfo, {"rebind.test": ["127.0.0.1", "127.0.0.2"], "mixed.test": ["127.0.0.1"]}

    def getaddrinfo(host, *args, **kwargs):
        if host == "mixed.test":  # a loopback address with a private one
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in ("127.0.0.1", "10.0.0.1")]
        if host in answers:
            address = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        # WHEN a delivery to that name is sent
        services.sender().handle(delivery(f"http://rebind.test:{port}/200", 1))
        # THEN it reached the address checked, with the URL's host in the Host header
        (path, headers, _), = got
        assert (path, headers["Host"], other) == ("/200", f"rebind.test:{port}", [])
        assert records()[1].state == "DELIVERED"
        # AND a name with one refused address among its answers gets nothing sent at all
        services.sender().handle(delivery(f"http://mixed.test:{port}/200", 2))
        assert records()[2].state == "FAILED" and "10.0.0.1" in records()[2].last_error
        assert len(got) == 1 and other == []
    finally:
        rebound.shutdown()
        rebound.server_close()
