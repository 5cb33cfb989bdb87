"""Fuzzing (schemathesis): generated requests, valid and invalid, to every operation of the
document the app serves at /openapi.json, with the bearer token of an ACCOUNT_ADMIN of DEMO. No
answer may be a 5xx, and every answer (status, content type, headers, body) must be one the
document describes.

The app is called in-process through the same code as local mode's HTTP server
(`localmode.gateway.dispatch`, then what RunnerRequestHandler and Chalice put on the wire) behind
a small WSGI adapter: schemathesis calls WSGI apps directly. One moto stack serves the whole run
(one test, one subtest per operation). The run is bounded (MAX_EXAMPLES per operation) and
derandomized: the same requests on every run and machine, but for the ids the stack generates.
RUNNER_FUZZ_EXAMPLES=200 fuzzes deeper, locally.
"""
from __future__ import annotations

import os
from http import HTTPStatus
from typing import Any, Callable, Iterable

import pytest
import schemathesis
from argon2 import PasswordHasher
from chalice.local import LocalGateway
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_headers_conformance, response_schema_conformance, status_code_conformance,
)

from chalicelib.auth import users
from localmode.gateway import dispatch
from tests.functional.conftest import ApiClient, make_account, token_for

# Cases per operation (about 480 requests in all, 15 s here).
MAX_EXAMPLES = int(os.environ.get("RUNNER_FUZZ_EXAMPLES", "15"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
PASSWORD = "correct-horse-battery"


def wsgi_app(gateway: LocalGateway) -> Callable:
    """A WSGI app answering as local mode's HTTP server does (localmode/gateway.py)."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        # The path as sent (still %-encoded, as local mode's server reads it), and the query.
        path = (environ.get("RAW_URI") or environ["PATH_INFO"]).split("?", 1)[0]
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
        headers = {name[5:].replace("_", "-").title(): value
                   for name, value in environ.items() if name.startswith("HTTP_")}
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                headers[name.replace("_", "-").title()] = environ[name]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else None
        status, out_headers, payload = dispatch(gateway, environ["REQUEST_METHOD"], path, headers, body)
        # RunnerRequestHandler._generic_handle, then Chalice's _send_http_response: no body for a
        # 204, and a body without a Content-Type goes as application/json (as API Gateway does).
        if status == 204:
            payload = None
            out_headers.pop("Content-Type", None)
        if payload is None:
            out_headers["Content-Length"] = "0"
        else:
            out_headers["Content-Length"] = str(len(payload))
            out_headers.setdefault("Content-Type", "application/json")
        sent = [(name, str(one)) for name, value in out_headers.items()
                for one in (value if isinstance(value, list) else [value])]
        start_response(f"{status} {_reason(status)}", sent)
        return [payload or b""]

    return app


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class Targets:
    """Ids that exist, swapped into the generated path parameters now and then so that requests
    reach past the 403s and 404s; and what was sent and answered."""

    def __init__(self, ids: dict[str, str]) -> None:
        self.ids = ids
        self.sent = 0
        self.statuses: dict[int, int] = {}

    def aim(self, case: Any) -> None:
        """Seven requests in eight are for account DEMO; one in two names ids that exist."""
        self.sent += 1
        parameters = case.path_parameters or {}
        if "accountAlias" in parameters and self.sent % 8:
            parameters["accountAlias"] = "DEMO"
        if self.sent % 2:
            for name in parameters:
                if name in self.ids:
                    parameters[name] = self.ids[name]
        if parameters.get("username") == "demo-user":  # the fuzzer's own user: its token must keep working
            parameters["username"] = self.ids["username"]

    def answered(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


@pytest.fixture
def fuzzed(gateway, aws_stack, monkeypatch) -> tuple[str, Targets]:
    """The token of DEMO's admin, and a job with an execution and a schedule, a service account
    and a second user (the fuzzer may change or delete it) for the requests to aim at.

    argon2 at its smallest cost (as in test_login_throttle.py): the fuzzer logs in and creates
    users and service accounts dozens of times; at the default cost, hashing was two thirds of
    the run's time."""
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(users, "_hasher", cheap)
    monkeypatch.setattr(users, "_DUMMY_HASH", cheap.hash("runner-timing-equalizer"))
    make_account("DEMO", PASSWORD)
    users.create_user("robot@demo", PASSWORD, "DEMO")
    token = token_for(aws_stack.signing_key, "demo-user")
    client = ApiClient(gateway, token)
    job = client.post("/jobs/DEMO", {"repository": {"url": "https://git.example.com/p.git", "defaultPlaybook": "site.yml"},
                                     "hosts": [{"id": "localhost"}]})
    execution = client.post(f"/jobs/DEMO/{job.body[0]['id']}/start", {})
    account = client.post("/serviceAccounts/DEMO", {"alias": "nightly", "username": "robot@demo", "password": PASSWORD})
    schedule = client.post(f"/jobs/DEMO/{job.body[0]['id']}/schedules",
                           {"serviceAccountAlias": "nightly", "trigger": {"type": "cron", "expression": "@daily"}})
    user = client.post("/users/DEMO", {"username": "fuzz-target", "password": PASSWORD, "role": "VIEWER"})
    assert [answer.status for answer in (job, execution, account, schedule, user)] == [201] * 5
    return token, Targets({"jobId": job.body[0]["id"], "executionId": execution.body["execution_id"],
                           "scheduleId": schedule.body["id"], "serviceAccountAlias": "nightly",
                           "username": "fuzz-target"})


def operations(gateway: LocalGateway) -> list:
    """Every operation of the document the app serves, as schemathesis loads it from a WSGI app;
    the DELETEs last, the deepest path first (deleting the job deletes its schedules), so that
    the ids the other operations aim at exist while they run."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", wsgi_app(gateway))
    found = [result.ok() for result in schema.get_all_operations()]
    deletes = sorted((operation for operation in found if operation.method.upper() == "DELETE"),
                     key=lambda operation: -operation.path.count("/"))
    return [operation for operation in found if operation.method.upper() != "DELETE"] + deletes


def test_no_answer_is_a_5xx_and_every_answer_is_documented(gateway, fuzzed, subtests, tmp_path):
    token, targets = fuzzed
    auth = {"Authorization": f"Bearer {token}"}
    fuzzed_operations = operations(gateway)
    assert len(fuzzed_operations) >= 33

    for operation in fuzzed_operations:
        # Valid and invalid requests, and the document's own examples. Our token replaces any
        # Authorization header generated, but a negative case may leave the header out
        # (schemathesis tests the security scheme too): a 401 the document describes.
        examples = operation.schema.get_strategies_from_examples(operation)
        cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE),
                          *([st.one_of(examples)] if examples else []))

        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        @given(case=cases)
        def fuzz(case):
            targets.aim(case)
            response = case.call(headers=auth)
            targets.answered(response.status_code)
            case.validate_response(response, checks=CHECKS, headers=auth)

        with subtests.test(operation.label):
            fuzz()

    summary = (f"fuzzing: {targets.sent} requests to {len(fuzzed_operations)} operations, "
               f"answers by status: {dict(sorted(targets.statuses.items()))}")
    print(summary)
    (tmp_path / "fuzzing.txt").write_text(summary + "\n", encoding="utf-8")
    assert targets.sent >= min(MAX_EXAMPLES, 5) * len(fuzzed_operations)  # it did fuzz
