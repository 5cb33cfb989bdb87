"""The Lambda-faithful sandbox of local workers, seen from a playbook, over HTTP.

A playbook on localhost runs a probe with the worker's Python in isolated mode (-I: without the
worker's pipe semaphores on PYTHONPATH), which reports what Lambda would refuse it.
"""
from __future__ import annotations

import json

import pytest

from tests.e2e.realparts import make_repo
from tests.waiting import wait_for

PROBE = r'''
import json, multiprocessing, os, pty

def fails(action):
    try:
        action()
    except OSError as exc:
        return str(exc) or type(exc).__name__
    return None

def write(path):
    with open(path, "w") as handle:
        handle.write("x")

def cmdlines():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                found.append(handle.read().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return found

print("PROBE " + json.dumps({
    "openpty": fails(pty.openpty),
    "simple_queue": fails(multiprocessing.SimpleQueue),
    "write_usr": fails(lambda: write("/usr/runner-probe")),
    "write_task": fails(lambda: write("/var/task/runner-probe")),
    "write_tmp": fails(lambda: write("/tmp/runner-probe")),
    "uid": os.getuid(),
    "dev": sorted(os.listdir("/dev")),
    "task_root": sorted(os.listdir("/var/task")),
    "cmdlines": cmdlines(),
    "pid_namespace": os.readlink("/proc/self/ns/pid"),
    "pid1_started": open("/proc/1/stat").read().split()[21],
    "lambda_function": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
}))
'''

PLAYBOOK = """- hosts: all
  gather_facts: false
  tasks:
    - name: probe the sandbox
      command:
        argv: ["{{ ansible_playbook_python }}", "-I", "{{ playbook_dir }}/probe.py"]
      register: probe
    - debug:
        msg: "{{ probe.stdout }}"
"""


@pytest.fixture(scope="module")
def one_worker(start_local_mode_module):
    """Local mode with one worker: one sandbox serves every run, like one warm Lambda environment."""
    return start_local_mode_module(env={"RUNNER_LOCAL_WORKERS": "1"}).start()


@pytest.fixture(scope="module")
def start_local_mode_module(tmp_path_factory):
    """Local modes that live for this module."""
    from tests.e2e.conftest import LocalMode

    made = []

    def make(env):
        base = tmp_path_factory.mktemp("sandboxed")
        instance = LocalMode(base / "state", base / "logs", env=env)
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.kill()


@pytest.fixture(scope="module")
def probe_repo(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("probe-repo")
    make_repo(path, {"site.yml": PLAYBOOK, "probe.py": PROBE})
    return f"file://{path}"


def run_probe(local_mode, repository: str) -> dict:
    """Run the probe playbook to its end; answer what the probe reported."""
    api = local_mode.client(local_mode.local["accountAlias"])
    created = api.post(f"/jobs/{local_mode.local['accountAlias']}", json={
        "repository": {"url": repository, "defaultPlaybook": "site.yml"},
        "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}]})
    assert created.status_code == 201, created.text
    job = created.json()[0]
    base = f"/jobs/{job['accountAlias']}/{job['id']}"
    execution = api.post(f"{base}/start", json={}).json()
    path = f"{base}/executions/{execution['execution_id']}"
    done = wait_for(lambda: api.get(path).json(),
                    lambda execution: execution["status"] in ("SUCCESS", "FAILURE", "INIT_FAILURE"),
                    timeout=120, message="the probe run never ended")
    log = api.get(f"{path}/log").text
    assert done["status"] == "SUCCESS", (done, log)
    line = next(line for line in log.splitlines() if "PROBE " in line)
    return json.loads(json.loads('"' + line.split("PROBE ", 1)[1].rstrip().rstrip('"') + '"'))


def test_the_sandbox_refuses_what_lambda_refuses(one_worker, probe_repo):
    # WHEN a playbook looks around the worker's environment
    seen = run_probe(one_worker, probe_repo)
    # THEN no pseudo-terminal, no POSIX semaphores (no /dev/shm), a read-only root and code
    assert seen["openpty"] is not None
    assert seen["simple_queue"] is not None
    assert "Read-only file system" in seen["write_usr"]
    assert "Read-only file system" in seen["write_task"]
    # AND /tmp is writable, the user is not root, /dev holds Lambda's five devices only
    assert seen["write_tmp"] is None
    assert seen["uid"] != 0
    assert seen["dev"] == ["full", "null", "random", "urandom", "zero"]
    # AND the code is what the Dockerfile copies; the worker's variables (Lambda's among them)
    # stay with the worker, out of the playbook's environment
    assert seen["task_root"] == ["chalicelib", "runner_lambda"]
    assert seen["lambda_function"] is None
    # AND local mode's own processes (server, emulator) are out of sight
    assert seen["cmdlines"], "the probe sees its own processes"
    assert not [line for line in seen["cmdlines"] if "localmode.emulator_process" in line
                or line.rstrip().endswith("-m localmode")]


def test_one_sandbox_serves_run_after_run(one_worker, probe_repo):
    # WHEN two executions run in turn on local mode's single worker
    first = run_probe(one_worker, probe_repo)
    second = run_probe(one_worker, probe_repo)
    # THEN both ran in the same sandbox: the same PID namespace, whose PID 1 never restarted
    assert first["pid_namespace"] == second["pid_namespace"]
    assert first["pid1_started"] == second["pid1_started"]
