"""Local mode as a user meets it: local.json, login, restarts, a taken port, Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import uuid

import pytest

from tests.e2e.conftest import STOP_TIMEOUT, assert_error, http_session

TOP_LEVEL_KEYS = {"baseUrl", "accountAlias", "username", "password", "bearerToken", "accounts", "exampleRepository"}
ACCOUNT_KEYS = {"accountAlias", "username", "password", "bearerToken"}
MASK = "********"


def a_job(**overrides) -> dict:
    job = {
        "description": "e2e local mode",
        "executionTtl": 15,
        "repository": {"url": "https://git.example.com/team/playbooks.git", "defaultPlaybook": "site.yml"},
        "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}],
        "properties": {"greeting": "hello"},
        "callbacks": [{"url": "http://127.0.0.1:9/hook", "level": "RESULT"}],
    }
    job.update(overrides)
    return job


# -- local.json -------------------------------------------------------------------------------

def test_local_json_has_exactly_the_documented_shape_with_every_account(service):
    document = service.local
    assert set(document) == TOP_LEVEL_KEYS
    assert document["baseUrl"] == service.base_url
    accounts = document["accounts"]
    assert isinstance(accounts, list)
    assert [entry["accountAlias"] for entry in accounts] == ["DEMO", "OTHER"]
    for entry in accounts:
        assert set(entry) == ACCOUNT_KEYS
        for key in ACCOUNT_KEYS:
            assert isinstance(entry[key], str) and entry[key], (key, entry)
    assert {key: document[key] for key in ACCOUNT_KEYS} == accounts[0]
    assert accounts[0]["username"] != accounts[1]["username"]
    assert accounts[0]["password"] != accounts[1]["password"]
    assert document["exampleRepository"].startswith("file://") and document["exampleRepository"].endswith("examples.git")


def test_local_json_is_readable_by_its_owner_only(service):
    mode = stat.S_IMODE((service.state_dir / "local.json").stat().st_mode)
    assert mode == 0o600, oct(mode)


def test_fresh_state_dirs_get_freshly_generated_passwords(start_local_mode):
    first = start_local_mode().start()
    second = start_local_mode().start()
    first_password, second_password = first.local["password"], second.local["password"]
    assert first_password != second_password
    assert first.local["bearerToken"] != second.local["bearerToken"]
    for password in (first_password, second_password):
        assert len(password) >= 12
        assert password.lower() not in {"password", "demo", "admin", "changeme"}


# -- login --------------------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["DEMO", "OTHER"])
def test_login_with_local_json_credentials_answers_a_working_token(service, alias):
    account = service.account(alias)
    anonymous = service.client()
    answer = anonymous.post("/authentication/login",
                            json={"username": account["username"], "password": account["password"]})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"userName", "accountAlias", "roles", "bearerToken"}
    assert body["userName"] == account["username"]
    assert body["accountAlias"] == alias
    assert isinstance(body["roles"], list) and all(isinstance(role, str) for role in body["roles"])
    assert isinstance(body["bearerToken"], str) and body["bearerToken"]
    assert account["password"] not in answer.text

    listed = service.client(token=body["bearerToken"]).get(f"/jobs/{alias}")
    assert listed.status_code == 200, listed.text
    assert {"totalSize", "page", "size", "results"} <= set(listed.json())


def test_local_json_bearer_token_works_as_is(service):
    answer = service.client("DEMO").get("/jobs/DEMO")
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["results"], list)


def test_login_with_a_wrong_password_is_401(service):
    account = service.account("DEMO")
    answer = service.client().post("/authentication/login",
                                   json={"username": account["username"], "password": account["password"] + "x"})
    body = assert_error(answer, 401)
    assert "bearerToken" not in body
    assert account["password"] not in answer.text


def test_login_of_an_unknown_user_is_401(service):
    answer = service.client().post("/authentication/login",
                                   json={"username": f"nobody-{uuid.uuid4().hex[:8]}", "password": "whatever-it-is"})
    body = assert_error(answer, 401)
    assert "bearerToken" not in body


def test_health_answers_without_a_token(service):
    answer = http_session().get(f"{service.base_url}/health", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


# -- restarts -------------------------------------------------------------------------------------

def test_restart_keeps_jobs(start_local_mode, tmp_path):
    state_dir = tmp_path / "kept"
    first = start_local_mode(state_dir=state_dir).start()
    demo = first.client("DEMO")
    created = demo.post("/jobs/DEMO", json=a_job())
    assert created.status_code == 201, created.text
    job = created.json()[0]
    before = demo.get(f"/jobs/DEMO/{job['id']}")
    assert before.status_code == 200, before.text

    stopped = first.stop()
    assert stopped.returncode == 0, stopped.output
    assert "state saved" in stopped.stdout, stopped.output

    second = start_local_mode(state_dir=state_dir).start()
    after = second.client("DEMO").get(f"/jobs/DEMO/{job['id']}")
    assert after.status_code == 200, after.text
    assert after.json() == before.json()
    assert after.json()["createdTime"] == job["createdTime"]
    assert after.json()["lastUpdatedTime"] == job["lastUpdatedTime"]

    listed = second.client("DEMO").get("/jobs/DEMO")
    assert listed.status_code == 200, listed.text
    assert listed.json()["totalSize"] == 1
    assert [item["id"] for item in listed.json()["results"]] == [job["id"]]


def test_tokens_issued_before_a_restart_stay_valid_after_it(start_local_mode, tmp_path):
    state_dir = tmp_path / "tokens"
    first = start_local_mode(state_dir=state_dir).start()
    account = first.account("DEMO")
    logged_in = first.client().post("/authentication/login",
                                    json={"username": account["username"], "password": account["password"]})
    assert logged_in.status_code == 200, logged_in.text
    tokens = [account["bearerToken"], logged_in.json()["bearerToken"]]
    assert first.stop().returncode == 0
    # The signing key is kept as an item of the accounts table, sealed by the emulator's KMS key:
    # the snapshot holds no key of its own, and nothing but a ciphertext of it.
    saved = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
    assert set(saved["emulator"]) == {"kmsKeyId", "kmsKeyMaterial"}
    key_items = [item for item in saved["tables"]["AccountsTable"] if item["accountAlias"]["S"].startswith("#")]
    assert [set(item) for item in key_items] == [{"accountAlias", "sealedKey", "createdTime"}]

    second = start_local_mode(state_dir=state_dir).start()
    for token in tokens:
        answer = second.client(token=token).get("/jobs/DEMO")
        assert answer.status_code == 200, answer.text
    assert second.client("DEMO").get("/jobs/DEMO").status_code == 200  # and the new ones too
    assert second.client(token=tokens[0][:-4] + "AAAA").get("/jobs/DEMO").status_code == 401


def test_restart_keeps_a_repository_password_masked(start_local_mode, tmp_path):
    state_dir = tmp_path / "secret"
    password = f"pw-{uuid.uuid4().hex}"
    first = start_local_mode(state_dir=state_dir).start()
    body = a_job(repository={"url": "https://git.example.com/team/private.git", "defaultPlaybook": "site.yml",
                             "credentials": {"username": "deployer", "password": password}})
    created = first.client("DEMO").post("/jobs/DEMO", json=body)
    assert created.status_code == 201, created.text
    job_id = created.json()[0]["id"]
    assert first.stop().returncode == 0
    assert password not in (state_dir / "state.json").read_text(encoding="utf-8")

    second = start_local_mode(state_dir=state_dir).start()
    after = second.client("DEMO").get(f"/jobs/DEMO/{job_id}")
    assert after.status_code == 200, after.text
    assert after.json()["repository"]["credentials"] == {"username": "deployer", "password": MASK}
    assert password not in after.text


# -- a taken port, Ctrl-C ---------------------------------------------------------------------

def test_a_taken_port_exits_1_with_a_one_line_message(start_local_mode):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        instance = start_local_mode(port=port).launch()
        ended = instance.wait_exit(60)
    assert ended.returncode == 1, ended.output
    assert "already in use" in ended.stderr, ended.output
    assert "Traceback" not in ended.output, ended.output
    assert len(ended.stderr.strip().splitlines()) == 1, ended.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_a_stop_signal_ends_local_mode_cleanly(start_local_mode, sig):
    instance = start_local_mode().start()
    stopped = instance.stop(sig, timeout=STOP_TIMEOUT)
    assert stopped.returncode == 0, stopped.output
    assert "state saved" in stopped.stdout, stopped.output
    assert "Traceback" not in stopped.output, stopped.output
    assert (instance.state_dir / "state.json").exists()
    with pytest.raises(OSError):
        with socket.create_connection(("127.0.0.1", instance.port), timeout=2):
            pass


def test_nothing_outlives_a_local_mode_killed_with_sigkill(start_local_mode):
    import psutil

    instance = start_local_mode().start()
    children = psutil.Process(instance.process.pid).children(recursive=True)
    assert any("worker_process" in " ".join(child.cmdline()) for child in children)
    os.kill(instance.process.pid, signal.SIGKILL)
    instance.process.wait(10)
    gone, alive = psutil.wait_procs(children, timeout=60)  # a deadline for a busy machine, not a measure
    assert alive == [], [" ".join(process.cmdline()) for process in alive]
