"""Executions end to end over HTTP: local mode, real git (file:// and smart HTTP), real sshd, real ansible."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import assert_error
from tests.e2e.realparts import commit, git_http, head, make_repo, ssh_server  # noqa: F401 - fixtures
from tests.waiting import wait_for, wait_until

FINAL = {"SUCCESS", "FAILURE", "INIT_FAILURE", "STOPPED", "KILLED"}
PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: greet
      debug:
        msg: "hello {{ greeting | default('world') }} from {{ inventory_hostname }}"
    - name: fail on the chosen host
      fail:
        msg: chosen to fail
      when: inventory_hostname == (fail_on | default(''))
    - name: deploy step
      debug:
        msg: deploying
      tags: [deploy]
"""
REMOTE = """- hosts: all
  gather_facts: false
  tasks:
    - name: touch a file on the target over ssh
      command: "touch {{ marker }}"
      args:
        creates: "{{ marker }}"
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("repo") / "playbooks"
    make_repo(path, {"site.yml": PLAYBOOK, "remote.yml": REMOTE})
    return path


def local_hosts(*names: str) -> list[dict]:
    return [{"id": name, "hostVars": {"ansible_connection": "local"}} for name in names]


def create_job(api, repository: dict, hosts: list[dict], **extra) -> dict:
    body = {"repository": {"defaultPlaybook": "site.yml", **repository}, "hosts": hosts, **extra}
    answer = api.post("/jobs/DEMO", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()[0]


def start(api, job: dict, body: dict | None = None) -> dict:
    answer = api.post(f"/jobs/DEMO/{job['id']}/start", json=body or {})
    assert answer.status_code == 201, answer.text
    execution = answer.json()
    assert execution["status"] == "PENDING"
    return execution


def wait_final(api, execution: dict, timeout: float = 90) -> dict:
    """The execution, once it has a final status."""
    path = f"/jobs/DEMO/{execution['job_id']}/executions/{execution['execution_id']}"
    return wait_for(lambda: api.get(path).json(), lambda current: current["status"] in FINAL, timeout,
                    lambda current: f"execution still {current['status']}")


def events(api, execution: dict) -> list[dict]:
    path = f"/jobs/DEMO/{execution['job_id']}/executions/{execution['execution_id']}/events"
    found, after = [], -1
    while True:
        page = api.get(path, params={"after": after, "size": 50}).json()
        found += page["results"]
        if page["next"] is None:
            return found
        after = page["next"]


def log(api, execution: dict) -> str:
    answer = api.get(f"/jobs/DEMO/{execution['job_id']}/executions/{execution['execution_id']}/log")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    return answer.text


def test_a_local_repository_playbook_succeeds_at_head(service, repo):
    api = service.client("DEMO")
    job = create_job(api, {"url": f"file://{repo}"}, local_hosts("localhost"), properties={"greeting": "e2e"})
    done = wait_final(api, start(api, job))
    assert done["status"] == "SUCCESS", done
    assert done["repository_log"]["recent_commit"][0]["commit"] == head(repo)
    assert done["start"] and done["end"] and done["end"] >= done["start"]
    kinds = [event["event"] for event in events(api, done)]
    assert kinds[0] == "playbook_on_start" and kinds[-1] == "playbook_on_stats" and "runner_on_ok" in kinds
    assert "hello e2e from localhost" in log(api, done)


def test_a_private_repository_over_http_clones_with_the_jobs_credentials(service, repo, git_http):
    url = git_http.publish(repo, "private-ok")
    api = service.client("DEMO")
    job = create_job(api, {"url": url, "credentials": {"username": git_http.username, "password": git_http.password}},
                     local_hosts("localhost"))
    done = wait_final(api, start(api, job))
    assert done["status"] == "SUCCESS", done
    assert any(request.auth_ok for request in git_http.requests)


def test_wrong_repository_credentials_are_an_init_failure_that_leaks_nothing(service, repo, git_http):
    url = git_http.publish(repo, "private-bad")
    api = service.client("DEMO")
    wrong = "wrong-Pa55-canary"
    job = create_job(api, {"url": url, "credentials": {"username": git_http.username, "password": wrong}},
                     local_hosts("localhost"))
    execution = start(api, job)
    done = wait_final(api, execution)
    assert done["status"] == "INIT_FAILURE" and done["status_reason"]
    everything = json.dumps(done) + json.dumps(events(api, done)) + log(api, done)
    assert wrong not in everything and git_http.password not in everything


def test_an_ssh_host_is_reached_with_the_jobs_key(service, repo, ssh_server, tmp_path):
    marker = tmp_path / "touched-over-ssh"
    api = service.client("DEMO")
    host_vars = {"ansible_port": ssh_server.port, "ansible_user": ssh_server.user,
                 "ansible_python_interpreter": ssh_server.python_interpreter}
    job = create_job(api, {"url": f"file://{repo}", "defaultPlaybook": "remote.yml"},
                     [{"id": "127.0.0.1", "hostVars": {**host_vars, "ansible_connection": "ssh"},
                       "sshPrivateKey": ssh_server.client_private_key_b64}],
                     properties={"marker": str(marker)})
    done = wait_final(api, start(api, job))
    assert done["status"] == "SUCCESS", (done, log(api, done))
    assert marker.exists()
    assert ssh_server.client_private_key_b64 not in json.dumps(api.get(f"/jobs/DEMO/{job['id']}").json())


def test_a_key_given_at_start_is_used_for_that_run(service, repo, ssh_server, tmp_path):
    marker = tmp_path / "touched-with-start-key"
    api = service.client("DEMO")
    host_vars = {"ansible_connection": "ssh", "ansible_port": ssh_server.port, "ansible_user": ssh_server.user,
                 "ansible_python_interpreter": ssh_server.python_interpreter}
    job = create_job(api, {"url": f"file://{repo}", "defaultPlaybook": "remote.yml"},
                     [{"id": "127.0.0.1", "hostVars": host_vars, "sshPrivateKey": ssh_server.other_private_key_b64}],
                     properties={"marker": str(marker)})
    refused = wait_final(api, start(api, job))
    assert refused["status"] == "FAILURE" and refused["failed_hosts"] == ["127.0.0.1"]
    done = wait_final(api, start(api, job, {"sshPrivateKey": ssh_server.client_private_key_b64,
                                            "hosts": [{"id": "127.0.0.1", "sshPrivateKey": ssh_server.client_private_key_b64}]}))
    assert done["status"] == "SUCCESS" and marker.exists()


def test_failure_on_one_of_two_hosts_then_restart_runs_it_alone_at_the_first_commit(service, tmp_path):
    repository = tmp_path / "moving"
    first = make_repo(repository, {"site.yml": PLAYBOOK})
    api = service.client("DEMO")
    job = create_job(api, {"url": f"file://{repository}"}, local_hosts("web1", "web2"), properties={"fail_on": "web2"})
    failed = wait_final(api, start(api, job))
    assert failed["status"] == "FAILURE" and failed["failed_hosts"] == ["web2"]
    commit(repository, {"site.yml": PLAYBOOK.replace("chosen to fail", "a later commit")}, "later")
    path = f"/jobs/DEMO/{job['id']}/executions/{failed['execution_id']}/restart"
    restarted = api.post(path, json={})
    assert restarted.status_code == 202 and restarted.json()["status"] == "PENDING"
    again = wait_final(api, restarted.json())
    assert again["status"] == "FAILURE" and again["attempt"] == 2 and len(again["timers"]) == 2
    assert again["repository_log"]["recent_commit"][0]["commit"] == first
    second_attempt_hosts = {e["host"] for e in events(api, again) if e["attempt"] == 2 and e["host"]}
    assert second_attempt_hosts == {"web2"}
    assert "chosen to fail" in log(api, again) and "a later commit" not in log(api, again)


def test_restart_of_a_successful_execution_is_409(service, repo):
    api = service.client("DEMO")
    job = create_job(api, {"url": f"file://{repo}"}, local_hosts("localhost"))
    done = wait_final(api, start(api, job))
    answer = api.post(f"/jobs/DEMO/{job['id']}/executions/{done['execution_id']}/restart", json={})
    assert_error(answer, 409)


def test_tags_and_properties_reach_the_playbook(service, repo):
    api = service.client("DEMO")
    job = create_job(api, {"url": f"file://{repo}"}, local_hosts("localhost"), playbookTags=["deploy"],
                     properties={"greeting": "tagged"})
    done = wait_final(api, start(api, job))
    tasks = {e["task"] for e in events(api, done) if e["event"] == "runner_on_ok"}
    assert done["status"] == "SUCCESS" and tasks == {"deploy step"}


def test_dynamic_inventory_gives_the_playbook_every_host_of_the_account(service, tmp_path):
    repository = tmp_path / "inventory"
    make_repo(repository, {"site.yml": "- hosts: all\n  gather_facts: false\n  tasks:\n"
                                       "    - debug: msg=\"ALL={{ groups['all'] | sort | join(',') }}\"\n"
                                       "      run_once: true\n"})
    api = service.client("DEMO")
    create_job(api, {"url": f"file://{repository}"}, local_hosts("dyn-db1", "dyn-db2"))
    job = create_job(api, {"url": f"file://{repository}"}, local_hosts("dyn-web1"), useDynamicInventory=True)
    done = wait_final(api, start(api, job))
    assert done["status"] == "SUCCESS"
    listed = log(api, done).split("ALL=")[1].split('"')[0].split(",")
    assert {"dyn-db1", "dyn-db2", "dyn-web1"} <= set(listed)


def test_a_missing_playbook_is_an_init_failure(service, repo):
    api = service.client("DEMO")
    job = create_job(api, {"url": f"file://{repo}", "defaultPlaybook": "missing.yml"}, local_hosts("localhost"))
    done = wait_final(api, start(api, job))
    assert done["status"] == "INIT_FAILURE" and "missing.yml" in done["status_reason"]


def test_a_duplicate_run_message_runs_nothing(service, repo):
    api = service.client("DEMO")
    job = create_job(api, {"url": f"file://{repo}"}, local_hosts("localhost"))
    done = wait_final(api, start(api, job))
    before = events(api, done)
    duplicate = {"accountAlias": "DEMO", "jobId": job["id"], "executionId": done["execution_id"],
                 "attempt": 1, "taskToken": "a-redelivered-message"}
    service.aws("sqs").send_message(QueueUrl=service.emulator_environment()["RUNNER_RUN_QUEUE_URL"],
                                    MessageBody=json.dumps(duplicate))
    # A worker deletes a message once it has handled it: a drained queue means the duplicate was handled.
    wait_until(lambda: service.queue_drained("RUNNER_RUN_QUEUE_URL"),
               message="the duplicate message was never consumed")
    after = api.get(f"/jobs/DEMO/{job['id']}/executions/{done['execution_id']}").json()
    assert after == done and events(api, done) == before


def test_execution_routes_of_another_account_are_403(service, repo):
    theirs = service.client("OTHER")
    answer = theirs.post("/jobs/OTHER", json={"repository": {"url": f"file://{repo}", "defaultPlaybook": "site.yml"},
                                              "hosts": local_hosts("localhost")})
    job = answer.json()[0]
    execution = theirs.post(f"/jobs/OTHER/{job['id']}/start", json={}).json()
    api = service.client("DEMO")
    base = f"/jobs/OTHER/{job['id']}"
    for method, path in [("POST", f"{base}/start"), ("GET", f"{base}/executions"),
                         ("GET", f"{base}/executions/{execution['execution_id']}"),
                         ("POST", f"{base}/executions/{execution['execution_id']}/restart"),
                         ("GET", f"{base}/executions/{execution['execution_id']}/events"),
                         ("GET", f"{base}/executions/{execution['execution_id']}/log")]:
        assert_error(api.request(method, path, json={}), 403)
