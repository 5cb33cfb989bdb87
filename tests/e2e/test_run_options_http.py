"""Per-start options and automatic retries end to end: local mode, real git, ansible, sshd, a webhook receiver."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import assert_error
from tests.e2e.realparts import Receiver, make_repo, ssh_server  # noqa: F401 - fixtures
from tests.e2e.test_executions_http import FINAL, create_job, events, local_hosts, log, start, wait_final
from tests.waiting import wait_for

PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: greet
      debug:
        msg: "greeting {{ greeting }} and {{ other }} on {{ inventory_hostname }}"
      tags: [one]
    - name: tagged one and two
      debug:
        msg: "step one-two ran"
      tags: [one, two]
    - name: tagged three
      debug:
        msg: "step three ran"
      tags: [three]
    - name: fail on the chosen hosts
      fail:
        msg: chosen to fail
      when: inventory_hostname in (fail_on | default('')).split(',')
      tags: [always]
"""
WRITE = """- hosts: all
  gather_facts: false
  tasks:
    - name: write the marker on the target
      copy:
        content: "written by the run\\n"
        dest: "{{ marker }}"
"""
# Fails on its first attempt only: the marker the first attempt leaves on the host tells them apart.
FLAKY = """- hosts: all
  gather_facts: false
  tasks:
    - name: look for the marker of an earlier attempt
      stat:
        path: "{{ marker }}"
      register: seen
    - name: leave the marker
      copy:
        content: "attempted\\n"
        dest: "{{ marker }}"
    - name: fail the first time only
      fail:
        msg: first attempt fails
      when: not seen.stat.exists
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("options-repo") / "playbooks"
    make_repo(path, {"site.yml": PLAYBOOK, "write.yml": WRITE, "flaky.yml": FLAKY})
    return path


@pytest.fixture(scope="module")
def receiver():
    made = Receiver()
    yield made
    made.server.shutdown()


def ssh_hosts(ssh_server, *names: str) -> list[dict]:
    """Hosts reached over SSH (real sshd on loopback, outside the workers' sandbox: files written there are ours to see)."""
    variables = {"ansible_connection": "ssh", "ansible_host": ssh_server.host, "ansible_port": ssh_server.port,
                 "ansible_user": ssh_server.user, "ansible_python_interpreter": ssh_server.python_interpreter}
    return [{"id": name, "hostVars": variables} for name in names]


def by_host(found: list[dict], attempt: int | None = None) -> set[str]:
    return {event["host"] for event in found if event["host"] and (attempt is None or event["attempt"] == attempt)}


def test_check_and_diff_mode_leave_the_file_uncreated_and_a_plain_run_creates_it(service, repo, ssh_server, tmp_path):
    marker = tmp_path / "marker"
    api = service.client("DEMO")
    job = create_job(api, {"url": f"file://{repo}", "defaultPlaybook": "write.yml"}, ssh_hosts(ssh_server, "target"),
                     sshPrivateKey=ssh_server.client_private_key_b64, properties={"marker": str(marker)})
    checked = wait_final(api, start(api, job, {"checkMode": True, "diffMode": True}))
    assert checked["status"] == "SUCCESS", checked
    assert checked["options"] == {"checkMode": True, "diffMode": True}
    assert not marker.exists()
    assert "+++ after" in log(api, checked)  # --diff shows the change it would make
    plain = wait_final(api, start(api, job))
    assert plain["status"] == "SUCCESS" and plain["options"] == {}
    assert marker.read_text() == "written by the run\n"
    assert "+++ after" not in log(api, plain)


def test_a_limit_runs_one_host_of_two(service, repo):
    api = service.client("DEMO")
    job = create_job(api, {"url": f"file://{repo}"}, local_hosts("h1", "h2"),
                     properties={"greeting": "hi", "other": "x"})
    done = wait_final(api, start(api, job, {"limit": "h*:!h1"}))
    assert done["status"] == "SUCCESS", done
    assert done["hosts"] == ["h2"] and done["options"] == {"limit": "h*:!h1"}
    assert by_host(events(api, done)) == {"h2"}
    listed = api.get(f"/jobs/DEMO/{job['id']}/executions").json()["results"]
    assert listed[0]["options"] == {"limit": "h*:!h1"}


def test_tags_skip_tags_extra_vars_and_verbosity_change_the_run_and_a_plain_run_keeps_the_jobs(service, repo):
    api = service.client("DEMO")
    job = create_job(api, {"url": f"file://{repo}"}, local_hosts("h1"), playbookTags=["three"],
                     properties={"greeting": "from-the-job", "other": "kept"})
    # GIVEN options that replace the job's tags, skip one, override a property and ask for -vv
    tuned = wait_final(api, start(api, job, {"tags": "one", "skipTags": "two", "verbosity": 2,
                                             "extraVars": {"greeting": "from-the-start"}}))
    text = log(api, tuned)
    assert tuned["status"] == "SUCCESS", tuned
    assert "greeting from-the-start and kept on h1" in text
    assert "step one-two ran" not in text and "step three ran" not in text
    assert "PLAYBOOK: site.yml" in text  # printed by ansible from -vv on
    # WHEN the job runs without options THEN its own tags and properties apply, at normal verbosity
    plain = wait_final(api, start(api, job))
    text = log(api, plain)
    assert plain["status"] == "SUCCESS", plain
    assert "step three ran" in text and "greeting" not in text and "PLAYBOOK: site.yml" not in text


def test_bad_options_are_400s_naming_the_field(service, repo):
    api = service.client("DEMO")
    job = create_job(api, {"url": f"file://{repo}"}, local_hosts("h1", "h2"))
    url = f"/jobs/DEMO/{job['id']}/start"
    for body, field in (({"limit": "db*"}, "limit"), ({"verbosity": 7}, "verbosity"), ({"tags": "-x"}, "tags"),
                        ({"skipTags": "a,-b"}, "skipTags"), ({"extraVars": ["a"]}, "extraVars"),
                        ({"checkMode": "true"}, "checkMode")):
        assert_error(api.post(url, json=body), 400, field)
    assert api.get(f"/jobs/DEMO/{job['id']}/executions").json()["totalSize"] == 0


def test_a_job_that_always_fails_on_one_host_retries_it_and_ends_failure_with_a_timer_per_attempt(
        service, repo, receiver):
    api = service.client("DEMO")
    job = create_job(api, {"url": f"file://{repo}"}, local_hosts("h1", "h2"),
                     properties={"greeting": "hi", "other": "x", "fail_on": "h2"},
                     retry={"attempts": 2, "delaySeconds": 1, "onlyFailedHosts": True},
                     callbacks=[{"url": f"{receiver.url}/retries", "level": "DEBUG"}])
    execution = start(api, job)
    path = f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}"
    done = wait_for(lambda: api.get(path).json(), lambda now: now["attempt"] == 3 and now["status"] in FINAL,
                    message=lambda now: f"attempt {now['attempt']} {now['status']}")
    assert done["status"] == "FAILURE" and done["failed_hosts"] == ["h2"], done
    assert len(done["timers"]) == 3 and all(timer["start"] and timer["end"] for timer in done["timers"])
    assert done["hosts"] == ["h2"] and done["retry"]["retries"] == 2
    found = events(api, done)
    assert by_host(found, 1) == {"h1", "h2"} and by_host(found, 2) == {"h2"} and by_host(found, 3) == {"h2"}
    # Every attempt's status changes reach the callback, in order.
    bodies = receiver.wait_for("/retries", lambda got: sum(1 for body in got if body["type"] == "status"
                                                           and body["status"] == "FAILURE") == 3)
    statuses = [(body["attempt"], body["status"]) for body in bodies if body["type"] == "status"]
    lifecycle = ["PENDING", "INITIALIZING", "RUNNING", "FAILURE"]
    assert statuses == [(attempt, status) for attempt in (1, 2, 3) for status in lifecycle]
    # No further attempt follows the last one.
    assert api.get(path).json()["attempt"] == 3


def test_a_retry_stops_at_the_first_success(service, repo, ssh_server, tmp_path):
    marker = tmp_path / "flaky-marker"
    api = service.client("DEMO")
    job = create_job(api, {"url": f"file://{repo}", "defaultPlaybook": "flaky.yml"}, ssh_hosts(ssh_server, "target"),
                     sshPrivateKey=ssh_server.client_private_key_b64, properties={"marker": str(marker)},
                     retry={"attempts": 3, "delaySeconds": 0})
    execution = start(api, job)
    path = f"/jobs/DEMO/{job['id']}/executions/{execution['execution_id']}"
    done = wait_for(lambda: api.get(path).json(), lambda now: now["status"] == "SUCCESS",
                    message=lambda now: f"attempt {now['attempt']} {now['status']}")
    assert done["attempt"] == 2 and len(done["timers"]) == 2 and done["retry"]["retries"] == 1
    assert done["status_reason"] is None and marker.exists()
