"""Users and roles over real HTTP against local mode: the users API, a 403 naming the role, a revoked token."""
from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import Client, assert_error

PASSWORD = "an-e2e-password-1"


@pytest.fixture
def demo(service) -> Client:
    return service.client("DEMO")


def login(service, username: str, password: str = PASSWORD) -> Client:
    answer = service.client().post("/authentication/login", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"userName", "accountAlias", "roles", "bearerToken"}
    return service.client(token=body["bearerToken"])


def test_users_api_roles_and_revocation_over_http(service, demo):
    name = f"e2e-{uuid.uuid4().hex[:8]}@demo"
    # an ACCOUNT_ADMIN creates a VIEWER
    created = demo.post("/users/DEMO", json={"username": name, "password": PASSWORD, "role": "VIEWER"})
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "VIEWER" and set(created.json()) == {"username", "accountAlias", "role",
                                                                          "createdTime"}
    listed = demo.get("/users/DEMO")
    assert listed.status_code == 200 and name in [user["username"] for user in listed.json()["users"]]
    assert PASSWORD not in listed.text and "argon2" not in listed.text
    # the VIEWER reads, and is told which role a write needs
    viewer = login(service, name)
    assert viewer.get("/jobs/DEMO").status_code == 200
    refused = assert_error(viewer.post("/jobs/DEMO", json={}), 403, "role")
    assert refused["code"] == "Forbidden" and "requires OPERATOR" in refused["message"]
    assert "requires ACCOUNT_ADMIN" in assert_error(viewer.get("/users/DEMO"), 403, "role")["message"]
    # promoted to OPERATOR: the VIEWER's token is revoked at once; a new login has the new role
    assert demo.put(f"/users/DEMO/{name}", json={"role": "OPERATOR"}).status_code == 200
    assert_error(viewer.get("/jobs/DEMO"), 401)
    operator = login(service, name)
    assert operator.post("/jobs/DEMO", json={}).status_code == 400  # past the role check: the body is wrong
    # deleted: its token stops working on the next request
    assert demo.delete(f"/users/DEMO/{name}").status_code == 204
    assert_error(operator.get("/jobs/DEMO"), 401)
    assert_error(demo.get(f"/users/DEMO/{name}"), 404)
    # the OpenAPI document served documents the users routes
    document = service.client().get("/openapi.json").json()
    assert {"/users/{accountAlias}", "/users/{accountAlias}/{username}"} <= set(document["paths"])
    assert set(document["components"]["schemas"]["User"]["properties"]) == {"username", "accountAlias", "role",
                                                                             "createdTime"}
