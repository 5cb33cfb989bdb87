"""Real answers of the app (moto behind it, real git and ansible) validate against docs/openapi.yaml."""
import yaml

from tests.functional.test_executions import events_of, job_body, repo, run_attempt, start  # noqa: F401
from tests.unit.test_openapi import SPEC_PATH, assert_valid

SPEC = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def test_job_answers_match_the_document(client, repo):
    created = client.post("/jobs/DEMO", job_body(repo, callbacks=[{"url": "https://hooks.example.com/x"}]))
    assert_valid(SPEC, "Job", created.body[0])
    assert_valid(SPEC, "JobPage", client.get("/jobs/DEMO").body)
    assert_valid(SPEC, "Error", client.get("/jobs/DEMO?page=-1").body)


def test_execution_answers_match_the_document(client, repo):
    job, execution = start(client, repo)
    assert_valid(SPEC, "Execution", execution)
    run_attempt(execution)
    path = f"/jobs/DEMO/{job['id']}/executions"
    assert_valid(SPEC, "Execution", client.get(f"{path}/{execution['execution_id']}").body)
    assert_valid(SPEC, "ExecutionPage", client.get(path).body)
    assert_valid(SPEC, "ExecutionEventPage", client.get(f"{path}/{execution['execution_id']}/events").body)
