"""docs/openapi.yaml: a valid OpenAPI 3.1 document, in step with the app's routes, served as written."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from chalice.test import Client
from openapi_schema_validator import OAS31Validator, oas31_format_checker
from openapi_spec_validator import validate as validate_spec

import app
from chalicelib.platform import paging
from chalicelib.platform import web as http
from chalicelib.jobs import spec as jobspec
from chalicelib.platform import wiring as services
from chalicelib.executions import states
from chalicelib.platform.config import Settings
from chalicelib.platform.errors import InvalidRequest, NotFound
from chalicelib.executions.service import MAX_EVENTS_PAGE, ExecutionService, parse_run_request, render_event, render_execution
from chalicelib.platform.web import events_params
from chalicelib.jobs.service import render_job
from chalicelib.platform.models import Execution, ExecutionEvent, Job, Timer
from chalicelib.platform.sealing import MASK
from chalicelib.auth.tokens import Principal, issue_token
from tests.keyfactory import b64_key

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
    assert schemas["RunRequest"]["properties"]["hosts"]["maxItems"] == jobspec.MAX_HOSTS
    assert job_input["callbacks"]["maxItems"] == jobspec.MAX_CALLBACKS
    assert job_input["description"]["maxLength"] == jobspec.MAX_TEXT
    assert schemas["RepositoryInput"]["properties"]["branch"]["default"] == jobspec.DEFAULT_BRANCH
    callback = schemas["CallbackInput"]["oneOf"][0]["properties"]["level"]
    assert tuple(callback["enum"]) == jobspec.CALLBACK_LEVELS
    assert schemas["Masked"]["const"] == MASK
    assert str(http.MAX_BODY_BYTES) in spec["components"]["responses"]["PayloadTooLarge"]["description"]
    assert f"may nest at most {http.MAX_JSON_DEPTH}" in " ".join(spec["info"]["description"].split())
    assert parameters["offset"]["schema"]["maximum"] == http.MAX_LOG_OFFSET
    assert parameters["cursor"]["schema"]["maxLength"] == paging.MAX_CURSOR_CHARS
    for path in ("/jobs/{accountAlias}/{jobId}/executions/{executionId}/events",
                 "/jobs/{accountAlias}/{jobId}/executions/{executionId}/log"):
        assert str(paging.MAX_RESPONSE_BYTES) in spec["paths"][path]["get"]["description"]


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


def parse_on_aws(body: dict) -> jobspec.JobInput:
    """A job body as the service parses it on AWS."""
    settings = Settings()
    return jobspec.parse_job(body, settings.repository_rules, settings.webhook_rules)


JOB_BODIES = [
    full_job_body(),
    {"repository": {"url": "git@example.com:org/repo.git", "defaultPlaybook": "site.yml"}, "hosts": [{"id": "localhost"}]},
]


def rendered(body: dict) -> dict:
    job_input = parse_on_aws(body)
    job = Job("DEMO", "1111505e-6773-494a-b2bf-d2cc2684710d", created_time=1440785845177,
              last_updated_time=1440785845178, spec=json.dumps(job_input.spec),
              sealed=json.dumps({path: {} for path in job_input.secrets}) if job_input.secrets else None)
    return render_job(job)


@pytest.mark.parametrize("body", JOB_BODIES, ids=["every-member", "minimal"])
def test_a_job_body_the_service_accepts_is_a_valid_job_input(spec, body):
    parse_on_aws(body)
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
    parse_on_aws(create["example"])
    login = spec["paths"]["/authentication/login"]["post"]["requestBody"]["content"]["application/json"]
    assert_valid(spec, "LoginRequest", login["example"])
    for response in spec["components"]["responses"].values():
        assert_valid(spec, "Error", response["content"]["application/json"]["example"])


# --- executions -----------------------------------------------------------------------------

JOB_ID = "1111505e-6773-494a-b2bf-d2cc2684710d"
EXECUTION_ID = "44fdcfa2-6a7f-46d3-9f71-22e629e2358a"
EXECUTION_PATH = f"/jobs/DEMO/{JOB_ID}/executions/{EXECUTION_ID}"
REPOSITORY_LOG = {
    "recent_commit": [{"commit": "b087e1a44c79d0576d7cccd249d3e71a3c54fe12", "author": "Author name",
                       "author_email": "sample@example.com", "date": "Wed Sep 16 16:27:20 2015 -0500",
                       "message": "Latest commit"}],
    "tags": ["v1.2"],
}
ALL_STATUSES = sorted(states.FINAL | states.ACTIVE)


def execution_model(**changes) -> Execution:
    """An execution item built in memory, as the service stores it (nothing is saved)."""
    values = dict(account_alias="DEMO", created_time=1444924450123, status=states.PENDING, attempt=1,
                  timers=[], target_hosts=["localhost"], failed_hosts=[], started_by="alice",
                  updated_time=1444924450123)
    values.update(changes)
    return Execution(JOB_ID, EXECUTION_ID, **values)


EXECUTIONS = {
    "pending": execution_model(),
    "running": execution_model(status=states.RUNNING, timers=[Timer(start=1444924450534, end=None)],
                               repository_log=json.dumps(REPOSITORY_LOG), pinned_commit="b087e1a"),
    "failure": execution_model(status=states.FAILURE, status_reason="ansible-playbook ended failed (rc 2)",
                               timers=[Timer(start=1444924450534, end=1444924452123)], failed_hosts=["web-1"],
                               target_hosts=["web-1", "web-2"], repository_log=json.dumps(REPOSITORY_LOG),
                               sealed_keys=json.dumps({"sshPrivateKey": {"sealed": "opaque"}}), rc=2,
                               stats=json.dumps({"web-1": {"failed": 1}})),
    "restarted": execution_model(status=states.PENDING, attempt=2, target_hosts=["web-1"],
                                 timers=[Timer(start=1444924450534, end=1444924452123)],
                                 repository_log=json.dumps(REPOSITORY_LOG)),
    "killed-while-pending": execution_model(status=states.KILLED, status_reason="killed", started_by=None),
    "init-failure": execution_model(status=states.INIT_FAILURE, status_reason="git clone failed",
                                    timers=[Timer(start=1444924450534, end=1444924451000)]),
}


def event_model(seq: int, attempt: int = 1, **changes) -> ExecutionEvent:
    values = dict(attempt=attempt, event="runner_on_ok", host="localhost", task="Gathering Facts",
                  stdout="ok: [localhost]", created="2024-05-01T12:00:03.123456",
                  data=json.dumps({"host": "localhost", "task": "Gathering Facts", "res": {"changed": False}}),
                  expires_at=1722500000)
    values.update(changes)
    return ExecutionEvent(EXECUTION_ID, seq, **values)


EVENTS = [
    event_model(1_000_001, event="playbook_on_start", host=None, task=None, stdout=None, data=None),
    event_model(1_000_002),
    event_model(2_000_001, attempt=2, event="playbook_on_stats", host=None, task=None,
                stdout="PLAY RECAP *****\nlocalhost : ok=1", data=json.dumps({})),
]


def test_the_execution_status_enum_is_the_state_machine(spec):
    assert sorted(spec["components"]["schemas"]["ExecutionStatus"]["enum"]) == ALL_STATUSES
    assert set(states.ALLOWED_FROM) == set(ALL_STATUSES)


@pytest.mark.parametrize("name", EXECUTIONS)
def test_an_execution_as_the_service_renders_it_matches_the_execution_schema(spec, name):
    execution = render_execution(EXECUTIONS[name])
    assert_valid(spec, "Execution", execution)
    assert_valid(spec, "ExecutionPage", {"totalSize": 1, "page": 0, "size": 1, "results": [execution]})
    properties = spec["components"]["schemas"]["Execution"]["properties"]
    assert set(execution) == set(properties) == set(spec["components"]["schemas"]["Execution"]["required"])


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_an_execution_in_every_status_matches_the_execution_schema(spec, status):
    execution = render_execution(execution_model(status=status, timers=[Timer(start=1, end=2)]))
    assert_valid(spec, "Execution", execution)
    assert (execution["end"] is None) == (status not in states.FINAL)


def test_the_execution_schema_has_no_place_for_a_key(spec):
    properties = spec["components"]["schemas"]["Execution"]["properties"]
    assert not [name for name in properties if "key" in name.lower() or "sealed" in name.lower()]
    assert "opaque" not in json.dumps(render_execution(EXECUTIONS["failure"]))


def test_an_event_as_the_service_renders_it_matches_the_event_schema(spec):
    for event in EVENTS:
        assert_valid(spec, "ExecutionEvent", render_event(event))
    assert set(render_event(EVENTS[0])) == set(spec["components"]["schemas"]["ExecutionEvent"]["properties"])


def run_bodies() -> list:
    return [
        {},
        {"hosts": []},
        {"hosts": [{"id": "localhost"}]},
        {"hosts": [{"id": "web-1", "sshPrivateKey": b64_key()}, "web-2", {"id": "all", "sshPrivateKey": None}],
         "sshPrivateKey": b64_key()},
        {"sshPrivateKey": b64_key(), "unknown": "ignored"},
        {"hosts": None, "sshPrivateKey": None},
    ]


def test_a_start_or_restart_body_the_service_accepts_is_a_valid_run_request(spec):
    for body in run_bodies():
        parse_run_request(body)
        assert_valid(spec, "RunRequest", body)


@pytest.mark.parametrize("body", [{"hosts": [{"id": "a b"}]}, {"hosts": [{"id": "-x"}]}, {"hosts": ["a,b"]},
                                  {"hosts": [{}]}, {"hosts": "web-1"}, {"sshPrivateKey": ""},
                                  {"hosts": [{"id": "web-1", "sshPrivateKey": 7}]}, {"sshPrivateKey": 7}])
def test_a_run_request_the_schema_refuses_the_service_refuses_too(spec, body):
    assert not schema_validator(spec, "RunRequest").is_valid(body)
    with pytest.raises(InvalidRequest):
        parse_run_request(body)


def test_the_documented_event_limits_are_those_the_code_enforces(spec):
    parameters = spec["components"]["parameters"]
    after, size = parameters["after"]["schema"], parameters["eventsSize"]["schema"]
    assert (parameters["after"]["name"], parameters["eventsSize"]["name"]) == ("after", "size")
    assert events_params({}) == (after["default"], size["default"])
    assert size["maximum"] == MAX_EVENTS_PAGE
    for name, schema in (("after", after), ("size", size)):
        for good in (schema["minimum"], schema["maximum"]):
            events_params({name: str(good)})
        for bad in (schema["minimum"] - 1, schema["maximum"] + 1):
            with pytest.raises(InvalidRequest):
                events_params({name: str(bad)})


def test_the_restart_conflict_names_the_restartable_statuses(spec):
    operation = spec["paths"]["/jobs/{accountAlias}/{jobId}/executions/{executionId}/restart"]["post"]
    only = re.search(r"Only an execution whose status is (.*?) can be restarted", " ".join(operation["description"].split()))
    for text in (only.group(1), operation["responses"]["409"]["description"]):
        named = {status for status in ALL_STATUSES if re.search(rf"\b{status}\b", text)}
        assert named == states.RESTARTABLE


def test_immediate_is_no_longer_documented_as_a_conflict(spec):
    assert "ImmediateUnavailable" not in spec["components"]["responses"]
    for (path, method), operation in operations(spec).items():
        conflict = operation["responses"].get("409", {})
        assert "immediate" not in conflict.get("description", ""), f"{method.upper()} {path}"
    assert "409" not in spec["components"]["parameters"]["immediate"]["description"]


def test_the_execution_examples_match_their_schemas(spec):
    schemas = spec["components"]["schemas"]
    for name in ("Execution", "ExecutionEvent", "RunRequest"):
        assert_valid(spec, name, schemas[name]["example"])
    start = spec["paths"]["/jobs/{accountAlias}/{jobId}/start"]["post"]["requestBody"]["content"]["application/json"]
    assert_valid(spec, "RunRequest", start["example"])
    parse_run_request(start["example"])
