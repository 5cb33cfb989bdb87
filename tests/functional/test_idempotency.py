"""Idempotency keys on create, start and restart (chalicelib/platform/idempotency.py), against moto."""
from __future__ import annotations

import pytest

from chalicelib.platform.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from chalicelib.platform.idempotency import KEEP_SECONDS, Answer, Claim, Idempotency, fingerprint, route_of
from chalicelib.platform.models import Execution, IdempotencyRecord

KEY = "Idempotency-Key"


def job_body(description: str = "idempotent") -> dict:
    return {"description": description,
            "repository": {"url": "https://git.example.com/org/playbooks.git", "defaultPlaybook": "site.yml"},
            "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}]}


def jobs_of(client, account: str = "DEMO") -> int:
    return client.get(f"/jobs/{account}").body["totalSize"]


def test_a_create_sent_again_with_its_key_answers_the_first_answer_and_creates_nothing(client):
    first = client.post("/jobs/DEMO", job_body(), headers={KEY: "create-1"})
    again = client.post("/jobs/DEMO", job_body(), headers={KEY: "create-1"})
    assert first.status == again.status == 201
    assert again.body == first.body
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert jobs_of(client) == 1


def test_the_same_key_with_another_body_is_422_and_creates_nothing(client):
    assert client.post("/jobs/DEMO", job_body("one"), headers={KEY: "k"}).status == 201
    answer = client.post("/jobs/DEMO", job_body("two"), headers={KEY: "k"})
    assert answer.status == 422
    assert answer.body["code"] == "IDEMPOTENCY_KEY_REUSED" and answer.body["field"] == KEY
    assert jobs_of(client) == 1


def test_the_query_is_part_of_the_request(client):
    assert client.post("/jobs/DEMO", job_body(), headers={KEY: "q"}).status == 201
    answer = client.post("/jobs/DEMO?immediate=true", job_body(), headers={KEY: "q"})
    assert answer.status == 422 and answer.body["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_without_a_key_every_request_creates(client):
    for _ in range(2):
        assert client.post("/jobs/DEMO", job_body()).status == 201
    assert jobs_of(client) == 2


def test_a_malformed_key_is_400_naming_the_header(client):
    for value in ("", "x" * 256, "caf\u00e9", "tab\there"):
        answer = client.post("/jobs/DEMO", job_body(), headers={KEY: value})
        assert answer.status == 400, value
        assert answer.body["code"] == "InvalidRequest" and answer.body["field"] == KEY
    assert jobs_of(client) == 0
    # The longest key, and every printable character, are keys.
    assert client.post("/jobs/DEMO", job_body(), headers={KEY: "k" * 255}).status == 201
    printable = "".join(chr(code) for code in range(0x20, 0x7F))
    assert client.post("/jobs/DEMO", job_body(), headers={KEY: printable}).status == 201


def test_keys_are_scoped_per_account(client):
    assert client.post("/jobs/DEMO", job_body(), headers={KEY: "shared"}).status == 201
    other = client.other.post("/jobs/OTHER", job_body("other"), headers={KEY: "shared"})
    assert other.status == 201 and other.body[0]["accountAlias"] == "OTHER"
    assert jobs_of(client) == 1 and jobs_of(client.other, "OTHER") == 1


def test_a_4xx_answer_is_kept_and_replayed(client):
    bad = {"description": "no repository"}
    first = client.post("/jobs/DEMO", bad, headers={KEY: "bad"})
    again = client.post("/jobs/DEMO", bad, headers={KEY: "bad"})
    assert first.status == again.status == 400 and again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_start_sent_again_with_its_key_makes_one_execution(client):
    job = client.post("/jobs/DEMO", job_body()).body[0]
    first = client.post(f"/jobs/DEMO/{job['id']}/start", {}, headers={KEY: "start"})
    again = client.post(f"/jobs/DEMO/{job['id']}/start", {}, headers={KEY: "start"})
    assert first.status == again.status == 201
    assert again.body["execution_id"] == first.body["execution_id"]
    assert len(list(Execution.query(job["id"]))) == 1


def test_one_key_on_two_jobs_starts_each(client):
    jobs = [client.post("/jobs/DEMO", job_body(f"job {n}")).body[0] for n in range(2)]
    ids = {client.post(f"/jobs/DEMO/{job['id']}/start", {}, headers={KEY: "same"}).body["execution_id"]
           for job in jobs}
    assert len(ids) == 2


def test_a_restart_sent_again_with_its_key_answers_the_first_answer(client):
    job = client.post("/jobs/DEMO", job_body()).body[0]
    execution = client.post(f"/jobs/DEMO/{job['id']}/start", {}).body
    Execution(job["id"], execution["execution_id"]).update(actions=[Execution.status.set("FAILURE")])
    path = f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}/restart"
    first = client.post(path, {}, headers={KEY: "restart"})
    again = client.post(path, {}, headers={KEY: "restart"})
    assert first.status == again.status == 202 and again.body == first.body
    assert int(Execution.get(job["id"], execution["execution_id"]).attempt) == 2
    # Without the key, a restart of the now PENDING execution is refused: the replay restarted nothing.
    assert client.post(path, {}).status == 409


# --- the store itself ---------------------------------------------------------------------------

ROUTE = route_of("POST", "/jobs/{accountAlias}", {"accountAlias": "DEMO"})
PRINT = fingerprint({}, b'{"a": 1}')


def test_a_released_claim_lets_the_retry_run(aws_stack):
    store = Idempotency()
    claim = store.begin("DEMO", ROUTE, "key", PRINT)
    assert isinstance(claim, Claim)
    store.release(claim)  # the request failed with a 5xx
    assert isinstance(store.begin("DEMO", ROUTE, "key", PRINT), Claim)


def test_a_second_request_waits_for_the_first_then_answers_in_progress(aws_stack):
    first = Idempotency().begin("DEMO", ROUTE, "key", PRINT)
    with pytest.raises(IdempotencyKeyInProgress) as raised:
        Idempotency(wait_seconds=0.3).begin("DEMO", ROUTE, "key", PRINT)
    assert raised.value.status == 409 and raised.value.headers() == {"Retry-After": "1"}
    Idempotency().complete(first, Answer(201, '{"id": "x"}', True, {"Content-Type": "application/json"}))
    replay = Idempotency(wait_seconds=0.3).begin("DEMO", ROUTE, "key", PRINT)
    assert replay == Answer(201, '{"id": "x"}', True, {"Content-Type": "application/json"})


def test_a_waiting_request_with_another_body_is_422_at_once(aws_stack):
    Idempotency().begin("DEMO", ROUTE, "key", PRINT)
    with pytest.raises(IdempotencyKeyReused):
        Idempotency(wait_seconds=30).begin("DEMO", ROUTE, "key", fingerprint({}, b'{"a": 2}'))


def test_a_key_is_forgotten_after_24_hours_even_before_dynamodb_removes_it(aws_stack):
    now = [1_000_000.0]
    store = Idempotency(clock=lambda: now[0])
    claim = store.begin("DEMO", ROUTE, "key", PRINT)
    store.complete(claim, Answer(201, "[]", True, {}))
    record = IdempotencyRecord.get("DEMO", claim.request_key)
    assert record.expires_at == int(now[0]) + KEEP_SECONDS  # DynamoDB's TTL attribute
    now[0] += KEEP_SECONDS + 1
    assert isinstance(store.begin("DEMO", ROUTE, "key", fingerprint({}, b"{}")), Claim)


def test_a_claim_whose_request_died_is_taken_over_by_the_same_request_only(aws_stack):
    now = [1_000_000.0]
    store = Idempotency(clock=lambda: now[0], wait_seconds=0.2)
    store.begin("DEMO", ROUTE, "key", PRINT)  # never completed nor released
    now[0] += 3600
    with pytest.raises(IdempotencyKeyReused):
        store.begin("DEMO", ROUTE, "key", fingerprint({}, b"{}"))
    assert isinstance(store.begin("DEMO", ROUTE, "key", PRINT), Claim)


def test_the_fingerprint_is_canonical_json():
    assert fingerprint({}, b'{"a": 1, "b": [1, 2]}') == fingerprint({}, b'{ "b":[1,2],"a":1 }')
    assert fingerprint({}, b'{"a": 1}') != fingerprint({"immediate": "true"}, b'{"a": 1}')
    assert fingerprint({}, b"") == fingerprint({}, None) != fingerprint({}, b"{}")
    assert fingerprint({}, b"not json") != fingerprint({}, b"not json either")
