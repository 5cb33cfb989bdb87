"""docs/openapi.yaml: a valid OpenAPI 3.1 document, in step with the app's routes, served as written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from chalice.test import Client
from openapi_schema_validator import OAS31Validator, oas31_format_checker
from openapi_spec_validator import validate as validate_spec

import app
from chalicelib import http, jobspec
from chalicelib.jobs import render_job
from chalicelib.models import Job
from chalicelib.secrets import MASK

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "docs" / "openapi.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def operations(spec: dict) -> dict[tuple[str, str], dict]:
    """(path, lowercase method) -> operation object, for every operation of the document."""
    return {(path, method): operation
            for path, item in spec["paths"].items()
            for method, operation in item.items() if method in HTTP_METHODS}


def routes() -> dict[tuple[str, str], object]:
    """(path, lowercase method) -> Chalice RouteEntry, for every route the app registers."""
    return {(path, method.lower()): entry
            for path, methods in app.app.routes.items()
            for method, entry in methods.items()}


def schema_validator(spec: dict, name: str) -> OAS31Validator:
    """A validator for components/schemas/<name>, its $refs resolved inside the document."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    return OAS31Validator(schema, format_checker=oas31_format_checker)


def assert_valid(spec: dict, name: str, instance: object) -> None:
    errors = [f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
              for error in schema_validator(spec, name).iter_errors(instance)]
    assert not errors, f"not a valid {name}:\n" + "\n".join(errors)


def test_the_document_is_a_valid_openapi_3_1_document(spec):
    assert spec["openapi"] == "3.1.0"
    validate_spec(spec)


def test_every_route_of_the_app_is_documented(spec):
    undocumented = sorted(set(routes()) - set(operations(spec)))
    assert not undocumented, f"routes missing from docs/openapi.yaml: {undocumented}"


def test_every_documented_operation_is_a_route_of_the_app(spec):
    unrouted = sorted(set(operations(spec)) - set(routes()))
    assert not unrouted, f"docs/openapi.yaml documents operations app.py does not route: {unrouted}"


def test_only_the_routes_without_authorizer_are_documented_as_public(spec):
    assert spec["security"] == [{"bearerAuth": []}]
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    documented = operations(spec)
    for key, entry in routes().items():
        public_in_app = entry.authorizer is None
        public_in_spec = documented[key].get("security") == []
        assert public_in_spec == public_in_app, f"{key}: public in app.py={public_in_app}, in the document={public_in_spec}"


def test_every_path_parameter_of_a_route_is_declared(spec):
    for (path, method), entry in routes().items():
        item = spec["paths"][path]
        parameters = [spec["components"]["parameters"][p["$ref"].rsplit("/", 1)[-1]] if "$ref" in p else p
                      for p in item.get("parameters", []) + item[method].get("parameters", [])]
        declared = {p["name"] for p in parameters if p["in"] == "path"}
        assert set(entry.view_args) <= declared, f"{method.upper()} {path} declares {sorted(declared)}"


def test_the_app_serves_the_file_in_docs():
    assert Path(app.OPENAPI_PATH).resolve() == SPEC_PATH.resolve()


def test_get_openapi_json_serves_the_document_as_written(spec):
    with Client(app.app) as client:
        response = client.http.get("/openapi.json")
    assert response.status_code == 200
    assert json.loads(response.body) == spec


def test_the_documented_limits_are_those_the_code_enforces(spec):
    parameters = spec["components"]["parameters"]
    assert parameters["page"]["schema"]["maximum"] == http.MAX_PAGE
    assert parameters["size"]["schema"]["maximum"] == http.MAX_PAGE_SIZE
    assert parameters["size"]["schema"]["default"] == http.DEFAULT_PAGE_SIZE
    schemas = spec["components"]["schemas"]
    job_input = schemas["JobInput"]["properties"]
    assert job_input["executionTtl"]["maximum"] == jobspec.MAX_TTL_MINUTES
    assert job_input["hosts"]["maxItems"] == jobspec.MAX_HOSTS
    assert job_input["callbacks"]["maxItems"] == jobspec.MAX_CALLBACKS
    assert job_input["description"]["maxLength"] == jobspec.MAX_TEXT
    assert schemas["RepositoryInput"]["properties"]["branch"]["default"] == jobspec.DEFAULT_BRANCH
    callback = schemas["CallbackInput"]["oneOf"][0]["properties"]["level"]
    assert tuple(callback["enum"]) == jobspec.CALLBACK_LEVELS
    assert schemas["Masked"]["const"] == MASK
    assert str(http.MAX_BODY_BYTES) in spec["components"]["responses"]["PayloadTooLarge"]["description"]


def full_job_body() -> dict:
    """A body using every member of a job (secrets as MASK, which needs no real key)."""
    return {
        "description": "every member",
        "executionTtl": 30,
        "repository": {
            "url": "https://example.com/playbooks.git", "ref": "v1.2", "defaultPlaybook": "site.yml",
            "credentials": {"username": "octocat", "password": MASK, "sshPrivateKey": MASK},
        },
        "playbookTags": ["web", "db,cache"],
        "hosts": [{"id": "web-1", "hostVars": {"port": 22}, "sshPrivateKey": MASK}, {"id": "all"}],
        "properties": [{"a": 1}, {"b": 2}],
        "callbacks": [{"url": "https://hooks.example.com/r", "level": "RESULT"}, "https://hooks.example.com/d"],
        "sshPrivateKey": MASK,
        "useDynamicInventory": True,
    }


JOB_BODIES = [
    full_job_body(),
    {"repository": {"url": "git@example.com:org/repo.git", "defaultPlaybook": "site.yml"}, "hosts": [{"id": "localhost"}]},
]


def rendered(body: dict) -> dict:
    job_input = jobspec.parse_job(body, local_mode=False)
    job = Job("DEMO", "1111505e-6773-494a-b2bf-d2cc2684710d", created_time=1440785845177,
              last_updated_time=1440785845178, spec=json.dumps(job_input.spec),
              sealed=json.dumps({path: {} for path in job_input.secrets}) if job_input.secrets else None)
    return render_job(job)


@pytest.mark.parametrize("body", JOB_BODIES, ids=["every-member", "minimal"])
def test_a_job_body_the_service_accepts_is_a_valid_job_input(spec, body):
    jobspec.parse_job(body, local_mode=False)
    assert_valid(spec, "JobInput", body)


@pytest.mark.parametrize("body", JOB_BODIES, ids=["every-member", "minimal"])
def test_a_job_as_the_service_renders_it_matches_the_job_schema(spec, body):
    job = rendered(body)
    assert_valid(spec, "Job", job)
    assert_valid(spec, "JobPage", {"totalSize": 1, "page": 0, "size": 1, "results": [job]})
    assert set(job) <= set(spec["components"]["schemas"]["Job"]["properties"]), "undocumented members"


def test_the_job_schema_allows_no_secret_in_clear(spec):
    job = rendered(full_job_body())
    assert job["sshPrivateKey"] == job["hosts"][0]["sshPrivateKey"] == MASK
    assert job["repository"]["credentials"] == {"username": "octocat", "password": MASK, "sshPrivateKey": MASK}
    validator = schema_validator(spec, "Job")
    for place in (job, job["hosts"][0], job["repository"]["credentials"]):
        for name in [key for key in place if key in ("password", "sshPrivateKey")]:
            place[name] = "clear text"
            assert not validator.is_valid(job), f"the Job schema lets {name} be answered in clear"
            place[name] = MASK


def test_the_examples_match_their_schemas(spec):
    assert_valid(spec, "Job", spec["components"]["schemas"]["Job"]["example"])
    create = spec["paths"]["/jobs/{accountAlias}"]["post"]["requestBody"]["content"]["application/json"]
    assert_valid(spec, "JobInput", create["example"])
    jobspec.parse_job(create["example"], local_mode=False)
    login = spec["paths"]["/authentication/login"]["post"]["requestBody"]["content"]["application/json"]
    assert_valid(spec, "LoginRequest", login["example"])
    for response in spec["components"]["responses"].values():
        assert_valid(spec, "Error", response["content"]["application/json"]["example"])
