"""Galaxy requirements and Idempotency keys end to end over HTTP: local mode, real git, real ansible-galaxy."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.e2e.conftest import assert_error
from tests.e2e.realparts import commit, make_repo
from tests.waiting import wait_for

FINAL = {"SUCCESS", "FAILURE", "INIT_FAILURE", "STOPPED", "KILLED"}
SITE = """- hosts: all
  gather_facts: false
  roles:
    - greeter
"""
ROLE_META = """galaxy_info:
  author: runner tests
  description: a role installed from roles/requirements.yml
  license: MIT
  min_ansible_version: "2.9"
  platforms: []
dependencies: []
"""
SECRET = "galaxy-s3cr3t-value-91"


def role_tasks(words: str) -> str:
    return f"- name: greet from the galaxy role\n  debug:\n    msg: \"{words}\"\n"


@pytest.fixture(scope="module")
def role_repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("galaxy") / "greeter-role"
    make_repo(path, {"tasks/main.yml": role_tasks("first version of the role"), "meta/main.yml": ROLE_META})
    return path


def create_job(api, repo: Path, **extra) -> dict:
    body = {"repository": {"url": f"file://{repo}", "defaultPlaybook": "site.yml"},
            "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}], **extra}
    answer = api.post("/jobs/DEMO", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()[0]


def run(api, job: dict) -> dict:
    started = api.post(f"/jobs/DEMO/{job['id']}/start", json={})
    assert started.status_code == 201, started.text
    path = f"/jobs/DEMO/{job['id']}/executions/{started.json()['execution_id']}"
    return wait_for(lambda: api.get(path).json(), lambda current: current["status"] in FINAL,
                    message=lambda current: f"execution still {current['status']}")


def log_of(api, execution: dict) -> str:
    return api.get(f"/jobs/DEMO/{execution['job_id']}/executions/{execution['execution_id']}/log").text


def test_a_role_from_roles_requirements_pointing_at_a_git_file_repository_runs(service, tmp_path_factory, role_repo):
    # GIVEN a playbook repository whose roles/requirements.yml names a role in another git repository
    playbooks = tmp_path_factory.mktemp("galaxy") / "playbooks"
    requirements = f"- src: git+file://{role_repo}\n  name: greeter\n  version: master\n"
    make_repo(playbooks, {"site.yml": SITE, "roles/requirements.yml": requirements})
    api = service.client("DEMO")
    job = create_job(api, playbooks)
    # WHEN it runs, THEN galaxy installed the role into the run's workspace and the play used it
    first = run(api, job)
    assert first["status"] == "SUCCESS", first["status_reason"]
    assert "first version of the role" in log_of(api, first)
    # WHEN the role's branch moves, THEN the next run installs the new commit, not a cached copy
    commit(role_repo, {"tasks/main.yml": role_tasks("second version of the role")})
    second = run(api, job)
    assert second["status"] == "SUCCESS", second
    assert "second version of the role" in log_of(api, second)
    assert "first version of the role" not in log_of(api, second)


def test_a_failed_install_ends_init_failure_with_galaxys_error_masked(service, tmp_path_factory, role_repo):
    # GIVEN a collection source that is a git repository but no collection (no galaxy.yml), whose
    # path holds the job's repository password
    base = tmp_path_factory.mktemp("galaxy")
    not_a_collection = base / f"not-a-collection-{SECRET}"
    make_repo(not_a_collection, {"README.md": "no galaxy.yml here\n"})
    playbooks = base / "broken"
    make_repo(playbooks, {"site.yml": SITE,
                          "requirements.yml": f"collections:\n  - name: file://{not_a_collection}\n"
                                              "    type: git\n    version: master\n"})
    api = service.client("DEMO")
    job = create_job(api, playbooks, repository={"url": f"file://{playbooks}", "defaultPlaybook": "site.yml",
                                                 "credentials": {"username": "u", "password": SECRET}})
    # WHEN it runs, THEN galaxy's own error ends it INIT_FAILURE, the password masked
    done = run(api, job)
    assert done["status"] == "INIT_FAILURE", done
    reason = done["status_reason"]
    assert "ansible-galaxy collection install -r requirements.yml failed" in reason, reason
    assert "not-a-collection-********" in reason and "neither a collection" in reason, reason
    assert SECRET not in reason and SECRET not in log_of(api, done)


def test_a_source_outside_the_repository_rules_is_refused_before_galaxy_runs(service, tmp_path_factory):
    playbooks = tmp_path_factory.mktemp("galaxy") / "refused"
    make_repo(playbooks, {"site.yml": SITE,
                          "collections/requirements.yml": "collections:\n  - name: /etc\n    type: dir\n"})
    api = service.client("DEMO")
    done = run(api, create_job(api, playbooks))
    assert done["status"] == "INIT_FAILURE"
    assert "collections/requirements.yml collections[0]" in done["status_reason"]
    assert "type 'dir' are not supported" in done["status_reason"]


def test_two_concurrent_starts_with_one_key_make_one_execution(service, tmp_path_factory):
    playbooks = tmp_path_factory.mktemp("idempotency") / "playbooks"
    make_repo(playbooks, {"site.yml": "- hosts: all\n  gather_facts: false\n  tasks: []\n"})
    api = service.client("DEMO")
    job = create_job(api, playbooks)
    barrier = threading.Barrier(2)
    answers: list = [None, None]

    def start(index: int) -> None:
        client = service.client("DEMO")  # a session (connection) of its own
        barrier.wait()
        answers[index] = client.post(f"/jobs/DEMO/{job['id']}/start", json={}, headers={"Idempotency-Key": "one"})

    threads = [threading.Thread(target=start, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [answer.status_code for answer in answers] == [201, 201], [answer.text for answer in answers]
    assert answers[0].json()["execution_id"] == answers[1].json()["execution_id"]
    assert answers[0].json() == answers[1].json()
    listed = api.get(f"/jobs/DEMO/{job['id']}/executions").json()
    assert listed["totalSize"] == 1 and len(listed["results"]) == 1
    # The same key with another body is refused, and starts nothing either
    other = api.post(f"/jobs/DEMO/{job['id']}/start", json={"hosts": [{"id": "localhost"}]},
                     headers={"Idempotency-Key": "one"})
    assert assert_error(other, 422, "Idempotency-Key")["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert api.get(f"/jobs/DEMO/{job['id']}/executions").json()["totalSize"] == 1


def test_a_create_repeated_with_its_key_over_http_answers_the_same_job(service, tmp_path_factory):
    api = service.client("DEMO")
    body = {"repository": {"url": "https://git.example.com/org/p.git", "defaultPlaybook": "site.yml"},
            "hosts": [{"id": "localhost"}], "description": "created once"}
    first = api.post("/jobs/DEMO", json=body, headers={"Idempotency-Key": "create over http"})
    again = api.post("/jobs/DEMO", json=body, headers={"Idempotency-Key": "create over http"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Content-Type"] == first.headers["Content-Type"]
    bad = api.post("/jobs/DEMO", json=body, headers={"Idempotency-Key": "x" * 256})
    assert_error(bad, 400, "Idempotency-Key")
