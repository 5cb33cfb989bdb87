"""Callbacks end to end: real runs in local mode, a real HTTP receiver on loopback, signed POSTs.

How soon a callback arrives is a benchmark figure (bench/callback_latency.py); here what arrives,
in what order and how many times.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from tests.e2e.realparts import Receiver, make_repo
from tests.e2e.test_executions_http import wait_final
from tests.keyfactory import b64_key
from tests.waiting import wait_until

PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: first step
      debug:
        msg: "step one on {{ inventory_hostname }}"
    - name: fail on the chosen host
      fail:
        msg: chosen to fail
      when: inventory_hostname == (fail_on | default(''))
    - name: last step
      debug:
        msg: "step two on {{ inventory_hostname }}"
"""


@pytest.fixture(scope="module")
def receiver():
    made = Receiver()
    yield made
    made.server.shutdown()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("callbacks-repo") / "playbooks"
    make_repo(path, {"site.yml": PLAYBOOK})
    return path


def final(status: str):
    return lambda bodies: any(body["type"] == "status" and body["status"] == status for body in bodies)


def run_with_callbacks(service, repo, callbacks: list[dict], **extra) -> tuple[dict, dict]:
    api = service.client("DEMO")
    body = {"repository": {"url": f"file://{repo}", "defaultPlaybook": "site.yml"},
            "hosts": [{"id": "web1", "hostVars": {"ansible_connection": "local"}},
                      {"id": "web2", "hostVars": {"ansible_connection": "local"}}],
            "callbacks": callbacks, **extra}
    job = api.post("/jobs/DEMO", json=body).json()[0]
    started = api.post(f"/jobs/DEMO/{job['id']}/start", json={})
    assert started.status_code == 201, started.text
    return job, wait_final(api, started.json())


def verify(secret: str, raw: bytes, header: str) -> bool:
    """What a receiver does with X-Runner-Signature."""
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def test_debug_gets_every_event_and_status_signed_and_in_an_order_that_rebuilds_the_log(service, repo, receiver):
    canary = b64_key()  # a job secret: must appear in no payload
    job, done = run_with_callbacks(service, repo, [{"url": f"{receiver.url}/debug", "level": "DEBUG"}],
                                   sshPrivateKey=canary)
    assert done["status"] == "SUCCESS", done
    api = service.client("DEMO")
    path = f"/jobs/DEMO/{job['id']}/executions/{done['execution_id']}"
    events = api.get(f"{path}/events", params={"size": 1000}).json()["results"]
    # Deliveries travel in parallel: the last status may arrive before the last events.
    bodies = receiver.wait_for("/debug", lambda found: len(found) == len(events) + 4)
    received_events = [body["event"] for body in bodies if body["type"] == "event"]
    assert [event["seq"] for event in received_events] == [event["seq"] for event in events]
    log_lines = api.get(f"{path}/log").text.splitlines()[1:-1]  # without the attempt and outcome lines
    rebuilt = "\n".join(event["stdout"] for event in received_events if event["stdout"]).splitlines()
    assert rebuilt == log_lines
    statuses = [body["status"] for body in bodies if body["type"] == "status"]
    assert statuses == ["PENDING", "INITIALIZING", "RUNNING", "SUCCESS"]
    assert len({body["seq"] for body in bodies}) == len(bodies)
    secret = api.get("/webhookSecret/DEMO").json()["webhookSecret"]
    with receiver.lock:
        raw = [item for item in receiver.received if item["path"] == "/debug"]
    assert all(verify(secret, item["raw"], item["headers"]["X-Runner-Signature"]) for item in raw)
    assert all(item["headers"]["X-Runner-Delivery"] == json.loads(item["raw"])["deliveryId"] for item in raw)
    assert not verify(secret, raw[0]["raw"].replace(b"SUCCESS", b"FAILURE").replace(b'"seq":', b'"seq": '),
                      raw[0]["headers"]["X-Runner-Signature"])
    everything = b"".join(item["raw"] for item in raw)
    assert canary.encode() not in everything
    result = [body for body in bodies if body["status"] == "SUCCESS"][0]
    for field in ("deliveryId", "accountAlias", "jobId", "executionId", "attempt", "seq", "level", "type",
                  "status", "event", "timestamp"):
        assert field in result


def test_error_gets_the_failing_hosts_event_and_the_failure_only(service, repo, receiver):
    _, done = run_with_callbacks(service, repo, [{"url": f"{receiver.url}/error", "level": "ERROR"}],
                                 properties={"fail_on": "web2"})
    assert done["status"] == "FAILURE"
    # Deliveries travel in parallel: the status may arrive before the event that caused it.
    bodies = receiver.wait_for("/error", lambda found: final("FAILURE")(found) and any(
        body["type"] == "event" and body["event"]["event"] == "runner_on_failed" for body in found))
    kinds = [body["event"]["event"] if body["type"] == "event" else body["status"] for body in bodies]
    assert "runner_on_failed" in kinds and kinds[-1] == "FAILURE"
    assert "runner_on_ok" not in kinds
    assert all(body["event"]["host"] == "web2" for body in bodies if body["type"] == "event")


def test_result_gets_one_post_with_the_final_status_and_stats(service, repo, receiver):
    # GIVEN a run with a RESULT callback, ended, its result received
    _, done = run_with_callbacks(service, repo, [{"url": f"{receiver.url}/result", "level": "RESULT"}])
    bodies = receiver.wait_for("/result", final("SUCCESS"))
    # WHEN nothing more can come: the run's workflow has ended (every notice of the run is queued)
    # and the callback queue is drained (every queued notice is delivered)
    wait_until(lambda: service.workflow_ended(done["execution_id"]), message="the run's workflow never ended")
    wait_until(lambda: service.queue_drained("RUNNER_CALLBACK_QUEUE_URL"), message="the callback queue never drained")
    # THEN the receiver got exactly one post
    assert len(receiver.bodies("/result")) == 1
    result = bodies[0]["result"]
    assert result["status"] == "SUCCESS" and result["failed_hosts"] == []
    assert result["stats"]["web1"]["ok"] >= 2 and result["stats"]["web2"]["failed"] == 0
    assert result["timers"][0]["start"] and result["timers"][0]["end"]


def test_a_receiver_failing_twice_gets_everything_once_after_deduplication(service, repo, receiver):
    receiver.fail_first["/flaky"] = 2
    job, done = run_with_callbacks(service, repo, [{"url": f"{receiver.url}/flaky", "level": "DEBUG"}])
    api = service.client("DEMO")
    events = api.get(f"/jobs/DEMO/{job['id']}/executions/{done['execution_id']}/events",
                     params={"size": 1000}).json()["results"]
    # The two refused deliveries come again after their backoff (about 1-2 s, then 2-4 s).
    bodies = receiver.wait_for("/flaky", lambda found: len(found) == len(events) + 4, timeout=90)
    statuses = [body["status"] for body in bodies if body["type"] == "status"]
    assert statuses == ["PENDING", "INITIALIZING", "RUNNING", "SUCCESS"]
    assert [body["event"]["seq"] for body in bodies if body["type"] == "event"] == [event["seq"] for event in events]
    log = api.get(f"/jobs/DEMO/{job['id']}/executions/{done['execution_id']}/deliveries").json()["results"]
    assert len(log) == len(bodies)
    assert all(item["state"] == "DELIVERED" for item in log)
    assert sum(item["tries"] - 1 for item in log) == 2
