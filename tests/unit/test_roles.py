"""The role table: every route of the app needs a role from it, and only the public ones none."""
from __future__ import annotations

import pytest

import app
from chalicelib.auth import roles


def routes() -> dict[tuple[str, str], object]:
    """(METHOD, path) -> Chalice RouteEntry, for every route the app registers."""
    return {(method, path): entry for path, methods in app.app.routes.items() for method, entry in methods.items()}


def test_every_route_of_the_app_has_a_required_role_and_enforces_it():
    missing = sorted(key for key in routes() if key not in roles.ROUTE_ROLES)
    assert not missing, f"routes without an entry in chalicelib/auth/roles.py ROUTE_ROLES: {missing}"
    for (method, path), entry in routes().items():
        needed = roles.ROUTE_ROLES[(method, path)]
        assert needed == roles.PUBLIC or needed in roles.ROLES, (method, path, needed)
        # the view was registered through app.route, which wraps it with this role's check
        assert getattr(entry.view_function, "required_role", None) == needed, (
            f"{method} {path} is not wrapped with its role check: register it with app.route")
        assert (entry.authorizer is None) == (needed == roles.PUBLIC), (method, path)


def test_the_table_names_no_route_the_app_does_not_have():
    assert not sorted(set(roles.ROUTE_ROLES) - set(routes()))


def test_only_health_the_document_and_login_are_public():
    public = {key for key, needed in roles.ROUTE_ROLES.items() if needed == roles.PUBLIC}
    assert public == {("GET", "/health"), ("GET", "/openapi.json"), ("POST", "/authentication/login")}


def test_the_rules_of_the_issue():
    table = roles.ROUTE_ROLES
    for (method, path), needed in table.items():
        if needed == roles.PUBLIC:
            continue
        if path.startswith(("/users/", "/webhookSecret/")):
            assert needed == roles.ACCOUNT_ADMIN, (method, path)  # even to read: membership, a clear secret
        elif method == "GET":
            assert needed == roles.VIEWER, (method, path)
        elif path.startswith("/serviceAccounts/"):
            assert needed == roles.ACCOUNT_ADMIN, (method, path)
        else:  # jobs, schedules, start, restart, stop, kill
            assert needed == roles.OPERATOR, (method, path)


def test_registering_a_route_the_table_does_not_name_fails():
    with pytest.raises(LookupError, match="ROUTE_ROLES"):
        app.route("/not/in/the/table", "GET")


def test_roles_are_ordered():
    assert roles.at_least("ACCOUNT_ADMIN", "OPERATOR") and roles.at_least("OPERATOR", "OPERATOR")
    assert not roles.at_least("VIEWER", "OPERATOR") and not roles.at_least("OPERATOR", "ACCOUNT_ADMIN")
    assert not roles.at_least(None, "VIEWER") and not roles.at_least("ROOT", "VIEWER")
    assert roles.at_least(None, roles.PUBLIC)


@pytest.mark.parametrize("stored, role", [
    ([], "ACCOUNT_ADMIN"),  # stored before roles: every user was an administrator
    (None, "ACCOUNT_ADMIN"),
    (["OPERATOR"], "OPERATOR"),
    (["VIEWER", "ACCOUNT_ADMIN"], "ACCOUNT_ADMIN"),
    (["SOMETHING"], "VIEWER"),
])
def test_the_role_of_a_stored_list(stored, role):
    assert roles.role_of(stored) == role


def test_the_api_document_names_the_role_of_every_operation():
    import yaml

    from tests.unit.test_openapi import HTTP_METHODS, SPEC_PATH

    document = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            needed = roles.required_role(method, path)
            if needed == roles.PUBLIC:
                assert "x-requiredRole" not in operation, (method, path)
            else:
                assert operation.get("x-requiredRole") == needed, (method, path)
                assert "403" in operation["responses"], (method, path)
