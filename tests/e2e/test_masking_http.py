"""Masking end to end: a playbook that prints the run's secrets in every way it can, run in local
mode; no form of any of them is in the events, the log, the execution or the DEBUG webhooks.

The secrets are the job's repository password (also written in the repository, and in its commit
message), the job's default and per-host SSH keys, and a key given at start: the key the run uses,
which the playbook reads through `ansible_ssh_private_key_file`.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from runner_lambda.masking import secret_forms
from tests.e2e.realparts import Receiver, make_repo
from tests.e2e.test_executions_http import events, wait_final
from tests.keyfactory import b64_key
from tests.leaks import leaks, strings

PASSWORD = 'pa"ss\\wörd-Ω-42'
PLAY_NAME = f"play for {PASSWORD}"
TASK_NAME = f"deploy with {PASSWORD}"


def key(filters: str = "") -> str:
    """A template of the key the host was given (a file ansible reads on the worker), then `filters`."""
    return "{{ lookup('file', ansible_ssh_private_key_file)" + filters + " }}"


# Each task prints a secret as playbooks do by accident (ansible then prints every result as JSON).
PASSWORD_FORMS = ["{{ pw }}", "{{ pw | b64encode }}", "{{ pw | to_json }}",
                  # inside a longer text, base64-encoded: the three byte alignments
                  *["{{ ('%s' ~ pw ~ ';end') | b64encode }}" % prefix for prefix in ("user=", "user=a", "user=ad")]]
KEY_FORMS = [key(), key(" | b64encode"), key(" | b64encode | replace('+', '-') | replace('/', '_')"),
             key(" | to_json"), key(".splitlines()"), key(".splitlines() | join(' ')"),
             key(" | replace('\\n', '\\r\\n')")]
TASKS = [
    {"name": "password", "debug": {"msg": "{{ item }}"}, "loop": PASSWORD_FORMS},
    {"name": "templated name {{ pw }}", "debug": {"msg": "ok"}},
    {"name": TASK_NAME, "debug": {"msg": "a task named after the secret"}},
    {"name": "key", "debug": {"msg": "{{ item }}"}, "loop": KEY_FORMS},
    {"name": "key by cat", "command": "cat {{ ansible_ssh_private_key_file }}"},
    {"name": "key with CRLF by sed", "shell": "sed 's/$/\\r/' {{ ansible_ssh_private_key_file }}"},
    {"name": "key by the base64 command", "command": "base64 {{ ansible_ssh_private_key_file }}"},
    {"name": "password on stderr", "shell": "printf '%s' \"$PW\" >&2", "environment": {"PW": "{{ pw }}"}},
    {"name": "an error naming the password", "fail": {"msg": "cannot log in with {{ pw }}"}, "ignore_errors": True},
]
PLAYBOOK = [{"name": PLAY_NAME, "hosts": "all", "gather_facts": False,
             "vars": {"pw": "{{ lookup('file', 'pw.txt') }}"}, "tasks": TASKS}]


def fresh_key() -> str:
    """A new OpenSSH private key, base64-encoded as the API takes it."""
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    return base64.b64encode(pem).decode()


@pytest.fixture(scope="module")
def receiver():
    made = Receiver()
    yield made
    made.server.shutdown()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("masking-repo") / "playbooks"
    make_repo(path, {"site.yml": yaml.safe_dump(PLAYBOOK, allow_unicode=True, sort_keys=False),
                     "pw.txt": PASSWORD}, message=f"set the password to {PASSWORD}")
    return path


def outputs(api, path: str, execution: dict, bodies: list[bytes]) -> dict[str, str]:
    """Everything a client or a receiver gets of the execution, as bytes and as decoded strings."""
    found = {"execution": api.get(path).text, "log": api.get(f"{path}/log").text,
             "events": json.dumps(events(api, execution), ensure_ascii=False)}
    for index, raw in enumerate(bodies):
        found[f"webhook {index}"] = raw.decode() + "\x00" + "\x00".join(strings(json.loads(raw)))
    return found


def test_a_playbook_printing_its_secrets_leaks_none_of_them(service, repo, receiver):
    # GIVEN a job holding a password, a default key and a host key, a DEBUG callback, and a start
    # giving the key this run uses (the one the playbook can read)
    job_key, host_key, run_key = fresh_key(), fresh_key(), b64_key("rsa")
    api = service.client("DEMO")
    body = {"repository": {"url": f"file://{repo}", "defaultPlaybook": "site.yml",
                           "credentials": {"username": "git-user", "password": PASSWORD}},
            "sshPrivateKey": job_key,
            "hosts": [{"id": "web1", "hostVars": {"ansible_connection": "local"}},
                      {"id": "db1", "hostVars": {"ansible_connection": "local"}, "sshPrivateKey": host_key}],
            "callbacks": [{"url": f"{receiver.url}/mask", "level": "DEBUG"}]}
    job = api.post("/jobs/DEMO", json=body).json()[0]
    started = api.post(f"/jobs/DEMO/{job['id']}/start", json={"hosts": [{"id": "web1"}], "sshPrivateKey": run_key})
    assert started.status_code == 201, started.text
    # WHEN the playbook has printed them every way it could
    done = wait_final(api, started.json(), timeout=180)
    assert done["status"] == "SUCCESS", done
    path = f"/jobs/DEMO/{job['id']}/executions/{done['execution_id']}"
    recorded = events(api, done)
    receiver.wait_for("/mask", lambda found: len(found) == len(recorded) + 4)
    with receiver.lock:
        bodies = [item["raw"] for item in receiver.received if item["path"] == "/mask"]
    # THEN no form of any secret is in any of it
    secrets = [PASSWORD] + [base64.b64decode(key).decode() for key in (job_key, host_key, run_key)]
    forms = {form for secret in secrets for form in secret_forms(secret)}
    found = outputs(api, path, done, bodies)
    leaked = [(where, form[:40]) for where, text in found.items() for form in forms if form in text]
    leaked += [(where, secret[:20], how) for where, text in found.items() for secret in secrets
               for how in leaks(secret, text)]
    assert leaked == [], leaked[:10]
    # AND what was printed is there, masked: task and play names, messages, errors, the commit message
    tasks = {event["task"] for event in recorded if event["task"]}
    assert "deploy with ********" in tasks and "templated name ********" in tasks, tasks
    assert any(event["event_data"].get("play") == "play for ********" for event in recorded)
    failed = [event for event in recorded if event["event"] == "runner_on_failed"]
    assert len(failed) == 1 and all(event["event_data"]["res"]["msg"] == "cannot log in with ********"
                                    for event in failed)
    by_cat = [event for event in recorded if event["task"] == "key by cat" and event["event"] == "runner_on_ok"]
    assert len(by_cat) == 1 and all(event["event_data"]["res"]["stdout"] == "********" for event in by_cat)
    execution = api.get(path).json()
    assert execution["repository_log"]["recent_commit"][0]["message"] == "set the password to ********"
    assert found["log"].count("********") > 30


def test_a_clone_failing_on_a_secret_says_so_masked(service, repo, receiver):
    # GIVEN a job whose repository password is, by mistake, also the branch it asks for
    password = "Br4nch-S3cret-value-9"
    api = service.client("DEMO")
    body = {"repository": {"url": f"file://{repo}", "defaultPlaybook": "site.yml", "branch": password,
                           "credentials": {"username": "git-user", "password": password}},
            "hosts": [{"id": "web1", "hostVars": {"ansible_connection": "local"}}],
            "callbacks": [{"url": f"{receiver.url}/clone", "level": "ERROR"}]}
    job = api.post("/jobs/DEMO", json=body).json()[0]
    started = api.post(f"/jobs/DEMO/{job['id']}/start", json={})
    # WHEN git cannot find it: git's error names the branch, and so does the worker's reason
    done = wait_final(api, started.json())
    assert done["status"] == "INIT_FAILURE", done
    # THEN the reason, the log and the ERROR webhook hold the mask and never the password
    assert "couldn't find remote ref ********" in done["status_reason"], done["status_reason"]
    posted = receiver.wait_for("/clone", lambda found: any(body["status"] == "INIT_FAILURE" for body in found))
    assert posted[-1]["result"]["status_reason"] == done["status_reason"]
    path = f"/jobs/DEMO/{job['id']}/executions/{done['execution_id']}"
    with receiver.lock:
        bodies = [item["raw"] for item in receiver.received if item["path"] == "/clone"]
    for text in [api.get(path).text, api.get(f"{path}/log").text] + [raw.decode() for raw in bodies]:
        assert not leaks(password, text) and password not in text
