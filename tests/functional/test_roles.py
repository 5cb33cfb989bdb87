"""Roles through the gateway: every route of the app, called with a token of each role."""
from __future__ import annotations

import re

from chalicelib.auth import roles, users
from tests.functional.conftest import token_for
from tests.functional.test_schedules import base, executions_of, fire, job, schedule_body  # noqa: F401

# Values for the path parameters: nothing of the kind exists, so an allowed call changes nothing.
FAKE = {"accountAlias": "DEMO", "jobId": "00000000-0000-4000-8000-000000000001",
        "executionId": "00000000-0000-4000-8000-000000000002", "scheduleId": "00000000-0000-4000-8000-000000000003",
        "serviceAccountAlias": "ghost", "username": "ghost@demo"}
PASSWORD = "a-fine-password-1"


def app_routes() -> list[tuple[str, str]]:
    from app import app

    return sorted((method, path) for path, methods in app.routes.items() for method in methods)


def test_every_route_answers_403_naming_the_role_it_needs_to_a_lower_role(client, aws_stack):
    checked = 0
    for role in roles.ROLES:
        username = f"{role.lower()}@demo"
        users.create_user(username, PASSWORD, "DEMO", role)
        token = token_for(aws_stack.signing_key, username)
        for method, path in app_routes():
            needed = roles.required_role(method, path)
            if needed == roles.PUBLIC:
                continue
            concrete = re.sub(r"\{(\w+)\}", lambda match: FAKE[match.group(1)], path)
            answer = client.request(method, concrete, {} if method in ("POST", "PUT") else None, token=token)
            if roles.at_least(role, needed):
                assert answer.status not in (401, 403), (role, method, path, answer.status, answer.body)
            else:
                assert answer.status == 403, (role, method, path, answer.status, answer.body)
                assert answer.body["code"] == "Forbidden" and answer.body["field"] == "role", answer.body
                assert f"requires {needed}" in answer.body["message"], answer.body
            checked += 1
    assert checked >= 3 * 30


def test_a_viewer_reads_with_secrets_masked_and_an_operator_runs_jobs(client, aws_stack):
    users.create_user("viewer@demo", PASSWORD, "DEMO", "VIEWER")
    users.create_user("operator@demo", PASSWORD, "DEMO", "OPERATOR")
    viewer, operator = (token_for(aws_stack.signing_key, name) for name in ("viewer@demo", "operator@demo"))
    job = {"repository": {"url": "https://github.com/org/repo.git", "defaultPlaybook": "site.yml",
                          "credentials": {"username": "git", "password": "a-git-secret-77"}},
           "hosts": [{"id": "localhost"}]}
    created = client.post("/jobs/DEMO", job, token=operator)
    assert created.status == 201, created.body
    read = client.get(f"/jobs/DEMO/{created.body[0]['id']}", token=viewer)
    assert read.status == 200 and read.body["repository"]["credentials"]["password"] == "********"
    refused = client.put(f"/jobs/DEMO/{created.body[0]['id']}", job, token=viewer)
    assert refused.status == 403 and refused.body == {
        "code": "Forbidden", "field": "role",
        "message": "PUT /jobs/{accountAlias}/{jobId} requires OPERATOR (your role is VIEWER)"}
    assert client.get("/webhookSecret/DEMO", token=operator).status == 403
    assert client.get("/users/DEMO", token=operator).body["message"].startswith("GET /users/{accountAlias} requires ACCOUNT_ADMIN")


def test_a_schedule_whose_service_account_is_a_viewer_starts_nothing_and_says_why(client, job):
    created = client.post(base(job), schedule_body("0 3 * * *")).body
    assert client.put("/users/DEMO/robot@demo", {"role": "VIEWER"}).status == 200
    assert fire(created, "2027-01-01T03:00:00Z")["outcome"] == "forbidden"
    assert executions_of(job) == []
    got = client.get(f"{base(job)}/{created['id']}").body
    assert "nightly" in got["lastError"] and "VIEWER" in got["lastError"] and "OPERATOR" in got["lastError"]
    assert got["lastErrorTime"]
    # an OPERATOR may fire
    assert client.put("/users/DEMO/robot@demo", {"role": "OPERATOR"}).status == 200
    assert fire(created, "2027-01-02T03:00:00Z")["outcome"] == "started"
    assert client.get(f"{base(job)}/{created['id']}").body["lastError"] is None
