#!/usr/bin/env python3
"""Peak memory of each function, measured here, and the MemorySize it suggests on Lambda.

    .venv/bin/python bench/memory.py           # every function, a text report
    .venv/bin/python bench/memory.py --json

Each function runs in a fresh interpreter (a child of this script) doing what one invocation
does, while this script samples the child's whole process tree every --interval seconds
(psutil): the sum of RSS (shared pages counted in every process: an upper bound) and the sum of
PSS (shared pages split between their processes: what the memory cgroup of a Lambda
environment comes closest to). A Python function is one process, so its own peak (VmHWM, the
kernel's high-water mark, no sampling) is reported as well.

- worker: `import runner_lambda.handler` (the image's CMD), the worker's clients built
  (handler.dependencies()), then runner_lambda.playbook.run_playbook, the worker's own
  ansible-runner invocation with its environment, pipe spawn and strategy plugin, on two
  playbooks (gather facts, a command, a file written, a debug): on localhost, and on 5 hosts by
  the local connection (forks 5, ansible's default). The CPU seconds of the tree are measured too
  (this process's children's times once the child has ended): Lambda gives CPU in proportion to
  memory (1,769 MB = 1 vCPU), so a run that needs C CPU-seconds takes at least C / (MB / 1769) s.
  Wall times here depend on what else this machine runs; the CPU seconds much less.
- The Chalice functions, against an emulator (localmode.emulator, provisioned from the template)
  with one bootstrap account:
  * api_handler: `import app`, a login (argon2id with chalicelib/auth/users.py's PasswordHasher()
    parameters), then a typical session (create a job with a sealed SSH key and a callback, read
    it, list, start an execution, read it, list executions, read its log) through Chalice's test
    client (which runs the token authorizer in the same process);
  * token_authorizer: `import app`, one token check through the authorizer's Lambda entry;
  * callback_sender: `import app`, the callback queue's messages of that execution handled through
    the SQS entry (a status notice, its delivery POSTed to a receiver here, signed with the
    account's webhook secret opened by KMS);
  * schedule_trigger: `import app`, one fire of a date schedule made by the api child (a
    service-account login, argon2 again, its password opened by KMS, an execution started);
  * schedule_reconciler: `import app`, one hourly reconcile.
  Note that `import app` itself hashes a password with argon2 (users.py's timing-equalizer hash
  is computed at import), so every Chalice function touches argon2's memory in its INIT.

Proposed MemorySize: the smallest of Lambda's usual steps at or above the peak PSS (or VmHWM)
times --headroom (default 1.5), at least 256 MB for the Chalice functions; for the worker, the
CPU trade-off is printed beside it. Exit code 0, or 2 when a measurement could not run.
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from common import ROOT, VENV_BIN, WebhookReceiver, log, run_benchmark

FULL_VCPU_MB = 1769
LAMBDA_GB_S_USD = 0.0000166667  # x86, us-east-1 (bench/cost.py PRICES, 2026-11-30)
STEPS_MB = (128, 256, 384, 512, 640, 768, 1024, 1280, 1536, 1769, 2048, 2560, 3008, 3584, 4096)
CHALICE_MINIMUM_MB = 256
WORKER_CANDIDATES_MB = (768, 1024, 1280, 1536, 1769, 2048, 3008)
CHILD_TIMEOUT_S = 240

PLAYBOOK = """- hosts: all
  gather_facts: true
  tasks:
    - name: a command
      command: uname -a
      changed_when: false
    - name: a file
      copy:
        content: "{{ inventory_hostname }} on {{ ansible_facts.hostname }} ({{ ansible_facts.distribution }})\\n"
        dest: "{{ lookup('env', 'TMPDIR') }}/{{ inventory_hostname }}.txt"
    - name: a message
      debug:
        msg: "{{ inventory_hostname }}: python {{ ansible_facts.python_version }}"
"""


# --------------------------------------------------------------------------- in the children

def own_memory() -> dict[str, float]:
    """This process's VmRSS and VmHWM (peak), in MB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) / 1024
    return found


class Stages:
    """The child's memory after each step, and the CPU and wall time of each."""

    def __init__(self) -> None:
        self.stages: list[dict] = []
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def mark(self, name: str, **extra: Any) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.stages.append({"stage": name, **own_memory(), "wall_s": round(wall - self._wall, 3),
                            "cpu_s": round(cpu - self._cpu, 3), **extra})
        self._wall, self._cpu = wall, cpu


def child_worker(stages: Stages, hosts: int) -> dict:
    """What one worker invocation holds: the handler's imports, its clients, a playbook run."""
    import runner_lambda.handler as handler
    stages.mark("import runner_lambda.handler")
    from chalicelib.platform import models
    handler.dependencies()
    models.bind()
    stages.mark("clients built")
    from runner_lambda.playbook import PlaybookRun, run_playbook
    from runner_lambda.workspace import Workspace, build_inventory

    with Workspace() as workspace:
        workspace.project.mkdir()
        (workspace.project / "site.yml").write_text(PLAYBOOK, encoding="utf-8")
        host_vars = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        names = ["localhost"] if hosts == 1 else [f"host{index}" for index in range(1, hosts + 1)]
        inventory, limit = build_inventory([{"id": name, "hostVars": host_vars} for name in names], [], {}, None)
        run = PlaybookRun(private_data_dir=str(workspace.path), project_dir=str(workspace.project),
                          playbook="site.yml", inventory=workspace.write_inventory(inventory), limit=limit,
                          run_id="memory-bench", stop_file=str(workspace.path / "stop"))
        events: list[str] = []
        before = os.times()
        result = run_playbook(run, lambda event: events.append(event.get("event", "")), lambda: False)
        after = os.times()
    children_cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    stages.mark("playbook run", hosts=hosts, ansible_cpu_s=round(children_cpu, 3))
    return {"status": result.status, "rc": result.rc, "events": len(events), "failed": result.failed_hosts}


def bind_models(stages: Stages) -> None:
    """What every Chalice function's first invocation does before its work: the models bound."""
    from chalicelib.platform import models
    models.bind()
    stages.mark("models bound (a DynamoDB client per model)")


def chalice_client(app: Any) -> Any:
    from chalice.test import Client
    return Client(app, project_dir=str(ROOT))


def child_api(stages: Stages, account: str, username: str, password: str, receiver: str) -> dict:
    """api_handler: import, a login, a session of typical requests."""
    from app import app
    stages.mark("import app")
    bind_models(stages)
    ids: dict[str, str] = {}
    with chalice_client(app) as client:
        def call(method: str, path: str, body: Any = None, token: str | None = None, expect: int = 200) -> Any:
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            answer = client.http.request(method, path, headers=headers,
                                         body=json.dumps(body).encode() if body is not None else b"")
            if answer.status_code != expect:
                raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.body[:300]!r}")
            return json.loads(answer.body) if answer.body and answer.body[:1] in (b"{", b"[") else answer.body
        token = call("POST", "/authentication/login", {"username": username, "password": password})["bearerToken"]
        stages.mark("login (argon2id verify)")
        from chalicelib.auth import users
        hashed = users.hash_password(password)
        stages.mark("argon2id hash alone")
        users._hasher.verify(hashed, password)
        stages.mark("argon2id verify alone")
        job = call("POST", f"/jobs/{account}", {
            "description": "memory bench",
            "repository": {"url": "https://example.com/repo.git", "defaultPlaybook": "site.yml"},
            "hosts": [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}],
            "sshPrivateKey": ssh_key_base64(), "callbacks": [{"url": receiver, "level": "DEBUG"}]},
            token, expect=201)[0]
        base = f"/jobs/{account}/{job['id']}"
        call("GET", base, token=token)
        call("GET", f"/jobs/{account}?page=0&size=20", token=token)
        execution = call("POST", f"{base}/start", {}, token, expect=201)
        call("GET", f"{base}/executions/{execution['execution_id']}", token=token)
        call("GET", f"{base}/executions?page=0&size=20", token=token)
        call("GET", f"{base}/executions/{execution['execution_id']}/log", token=token)
        stages.mark("typical requests (job create/get/list, start, execution get/list, log)")
        # For the schedule_trigger child: a service account (this user) and a date schedule on the job.
        call("POST", f"/serviceAccounts/{account}", {"alias": "memory-sa", "username": username, "password": password},
             token, expect=201)
        fire = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
        schedule = call("POST", f"{base}/schedules", {"description": "memory bench", "serviceAccountAlias": "memory-sa",
                                                      "trigger": {"type": "date", "expression": fire}}, token, expect=201)
        ids = {"token": token, "job": job["id"], "execution": execution["execution_id"], "schedule": schedule["id"],
               "fire": fire}
    return ids


def child_authorizer(stages: Stages, token: str) -> dict:
    """token_authorizer: import, one token check through its Lambda entry."""
    from app import token_authorizer
    stages.mark("import app")  # the check binds one model: the signing key's item, then KMS Decrypt
    answer = token_authorizer({"type": "TOKEN", "authorizationToken": f"Bearer {token}",
                               "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef/api/GET/jobs/DEMO"},
                              None)
    stages.mark("token check")
    return {"effect": answer["policyDocument"]["Statement"][0]["Effect"]}


def child_sender(stages: Stages) -> dict:
    """callback_sender: import, every message of the callback queue through its SQS entry (batch size 1)."""
    from app import callback_sender
    from chalicelib.platform import aws
    from chalicelib.platform.config import get_settings
    from localmode.queue_poller import lambda_event
    stages.mark("import app")
    bind_models(stages)
    settings = get_settings()
    sqs = aws.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=settings.callback_queue_url,
                                   AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    handled = empty = 0
    while empty < 2 and handled < 50:
        messages = sqs.receive_message(QueueUrl=settings.callback_queue_url, MaxNumberOfMessages=1,
                                       WaitTimeSeconds=1).get("Messages", [])
        if not messages:
            empty += 1
            continue
        empty = 0
        callback_sender(lambda_event(messages, arn, settings.region), LambdaContext())
        sqs.delete_message(QueueUrl=settings.callback_queue_url, ReceiptHandle=messages[0]["ReceiptHandle"])
        handled += 1
    stages.mark("callback messages handled", messages=handled)
    return {"messages": handled}


def child_trigger(stages: Stages, event: dict) -> dict:
    """schedule_trigger: import, one fire (service-account login, KMS, start)."""
    from app import schedule_trigger
    stages.mark("import app")
    bind_models(stages)
    answer = schedule_trigger(event, LambdaContext())
    stages.mark("one fire (service-account login, start)")
    return {"answer": answer}


def child_reconciler(stages: Stages) -> dict:
    """schedule_reconciler: import, one reconcile."""
    from app import schedule_reconciler
    stages.mark("import app")
    bind_models(stages)
    answer = schedule_reconciler({"version": "0", "id": "memory-bench", "detail-type": "Scheduled Event",
                                  "source": "aws.events", "account": "123456789012", "time": "2026-11-30T00:00:00Z",
                                  "region": "us-east-1", "resources": [], "detail": {}}, LambdaContext())
    stages.mark("one reconcile")
    return {"answer": answer}


class LambdaContext:
    """What the handlers read of Lambda's context."""

    function_name = "memory-bench"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:memory-bench"
    aws_request_id = "memory-bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


def ssh_key_base64() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                     serialization.NoEncryption())
    return base64.b64encode(pem).decode("ascii")


CHILDREN = {"worker": child_worker, "api_handler": child_api, "token_authorizer": child_authorizer,
            "callback_sender": child_sender, "schedule_trigger": child_trigger,
            "schedule_reconciler": child_reconciler}


def run_child(name: str, arguments: dict) -> None:
    """In the child: run one function's steps; its figures as one JSON line on stdout."""
    sys.path.insert(0, str(ROOT))
    stages = Stages()
    stages.mark("interpreter")
    result = CHILDREN[name](stages, **arguments)
    print(json.dumps({"stages": stages.stages, "result": result}), flush=True)


# --------------------------------------------------------------------------- in the parent

@dataclass
class Measurement:
    """One child's figures: its own stages and the sampled peaks of its process tree."""

    name: str
    stages: list[dict]
    result: dict
    tree_rss_mb: float
    tree_pss_mb: float
    tree_processes: int
    wall_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def hwm_mb(self) -> float:
        return max(stage.get("VmHWM", 0.0) for stage in self.stages)

    @property
    def peak_mb(self) -> float:
        """What to size by: the tree's PSS peak, or the process's own peak if sampling missed it."""
        return max(self.tree_pss_mb, self.hwm_mb)


class TreeSampler:
    """Samples a process tree's summed RSS and PSS until stopped; keeps the peaks."""

    def __init__(self, pid: int, interval: float) -> None:
        import psutil
        self._psutil = psutil
        self._root = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.rss = self.pss = 0.0
        self.processes = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        psutil = self._psutil
        while not self._stop.is_set():
            try:
                tree = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                return
            rss = pss = 0.0
            for process in tree:
                try:
                    info = process.memory_full_info()
                except psutil.Error:
                    continue
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
            self.rss = max(self.rss, rss / 2**20)
            self.pss = max(self.pss, pss / 2**20)
            self.processes = max(self.processes, len(tree))
            self._stop.wait(self._interval)


def measure(name: str, arguments: dict, env: dict[str, str], interval: float) -> Measurement:
    """Run one child under the sampler."""
    python = VENV_BIN / "python"
    command = [str(python if python.exists() else sys.executable), str(Path(__file__).resolve()),
               "--child", name, "--arguments", json.dumps(arguments)]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeSampler(process.pid, interval) as sampler:
        try:
            out, err = process.communicate(timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            raise RuntimeError(f"{name}: no answer within {CHILD_TIMEOUT_S} s: {err[-2000:]}") from None
    wall = time.perf_counter() - started
    if process.returncode != 0 or not out.strip():
        raise RuntimeError(f"{name}: exit code {process.returncode}: {err[-3000:]}")
    document = json.loads(out.strip().splitlines()[-1])
    return Measurement(name, document["stages"], document["result"], round(sampler.rss, 1), round(sampler.pss, 1),
                       sampler.processes, round(wall, 2))


def emulated_environment() -> tuple[Any, dict[str, str], dict]:
    """An emulator provisioned from the template, one bootstrap account; (emulator, env, account entry)."""
    sys.path.insert(0, str(ROOT))
    from chalicelib.platform import aws, models, wiring
    from chalicelib.platform.config import reset_settings
    from chalicelib.platform.template import load_template
    from localmode.bootstrap import bootstrap_accounts
    from localmode.emulator import LOCAL_PREFIX, EmulatorProcess, emulator_environment, new_access_key

    emulator = EmulatorProcess(region="us-east-1")
    environment = emulator_environment(emulator.endpoint, emulator.region, LOCAL_PREFIX, load_template(),
                                       new_access_key())
    os.environ.update(environment)
    state = emulator.start(environment, None)
    environment["RUNNER_KMS_KEY_ID"] = state.kms_key_id
    os.environ["RUNNER_KMS_KEY_ID"] = state.kms_key_id
    reset_settings()
    aws.reset_clients()
    models.unbind()
    wiring.reset()
    models.bind()
    entry = bootstrap_accounts(["DEMO"], wiring.signing_key().get(), 3600, {})[0]
    return emulator, environment, entry


def schedule_event(environment: dict[str, str], ids: dict) -> dict:
    """The input Scheduler would send for the date schedule the api child made (placeholders filled)."""
    import boto3
    scheduler = boto3.client("scheduler", region_name=environment["AWS_REGION"],
                             endpoint_url=environment["AWS_ENDPOINT_URL"],
                             aws_access_key_id=environment["AWS_ACCESS_KEY_ID"], aws_secret_access_key="local",
                             aws_session_token="local")
    group = environment["RUNNER_SCHEDULE_GROUP"]
    inputs = {item["Name"]: scheduler.get_schedule(Name=item["Name"], GroupName=group)["Target"]["Input"]
              for item in scheduler.list_schedules(GroupName=group)["Schedules"]}
    name, text = next((name, text) for name, text in inputs.items() if ids["schedule"] in text)
    arn = f"arn:aws:scheduler:us-east-1:123456789012:schedule/{group}/{name}"
    for placeholder, value in (("<aws.scheduler.scheduled-time>", ids["fire"]), ("<aws.scheduler.execution-id>", "x"),
                               ("<aws.scheduler.schedule-arn>", arn), ("<aws.scheduler.attempt-number>", "1")):
        text = text.replace(placeholder, value)
    return json.loads(text)


def step_at_least(mb: float, minimum: int = 128) -> int:
    """The smallest usual Lambda step at or above `mb` (and `minimum`)."""
    for step in STEPS_MB:
        if step >= max(mb, minimum):
            return step
    return int(math.ceil(mb / 64) * 64)


def measure_all(args: argparse.Namespace) -> dict:
    """Every child; the figures and proposals."""
    os.chdir(ROOT)  # the emulator starts as `python -m localmode.emulator_process`
    base_env = {name: value for name, value in os.environ.items()
                if not name.startswith(("AWS_", "RUNNER_"))}
    offline = {**base_env, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": "memory", "AWS_SECRET_ACCESS_KEY": "memory",
               "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # the worker child builds clients, calls nothing
    measurements: dict[str, Measurement] = {}
    for hosts in (1, 5):
        log(f"worker: a playbook on {hosts} host(s)")
        found = measure("worker", {"hosts": hosts}, offline, args.interval)
        if found.result.get("rc") != 0:
            raise RuntimeError(f"the worker's playbook on {hosts} host(s) failed: {found.result}")
        measurements[f"worker ({hosts} host{'s' if hosts > 1 else ''})"] = found
    emulator, environment, entry = emulated_environment()
    receiver = WebhookReceiver()
    try:
        env = {**base_env, **environment}
        log("api_handler")
        api = measure("api_handler", {"account": entry["accountAlias"], "username": entry["username"],
                                      "password": entry["password"], "receiver": receiver.url}, env, args.interval)
        measurements["api_handler"] = api
        ids = api.result
        log("token_authorizer")
        measurements["token_authorizer"] = measure("token_authorizer", {"token": ids["token"]}, env, args.interval)
        log("callback_sender")
        measurements["callback_sender"] = measure("callback_sender", {}, env, args.interval)
        log("schedule_trigger")
        measurements["schedule_trigger"] = measure("schedule_trigger", {"event": schedule_event(environment, ids)},
                                                   env, args.interval)
        log("schedule_reconciler")
        measurements["schedule_reconciler"] = measure("schedule_reconciler", {}, env, args.interval)
    finally:
        receiver.close()
        emulator.stop()
    return proposals(measurements, args.headroom)


def proposals(measurements: dict[str, Measurement], headroom: float) -> dict:
    """MemorySize proposals, and the worker's CPU trade-off."""
    chalice = {}
    for name in ("api_handler", "token_authorizer", "callback_sender", "schedule_trigger", "schedule_reconciler"):
        found = measurements[name]
        chalice[name] = {"peak_mb": round(found.peak_mb, 1),
                         "proposed_mb": step_at_least(found.peak_mb * headroom, CHALICE_MINIMUM_MB)}
    api_stages = {stage["stage"]: stage for stage in measurements["api_handler"].stages}
    login = api_stages["login (argon2id verify)"]
    verify = api_stages["argon2id verify alone"]
    import_stage = api_stages["import app"]
    bind_stage = api_stages["models bound (a DynamoDB client per model)"]
    worker5 = measurements["worker (5 hosts)"]
    worker1 = measurements["worker (1 host)"]
    worker_peak = max(worker5.peak_mb, worker1.peak_mb)
    tradeoff = []
    for found, label in ((worker1, "1 host"), (worker5, "5 hosts")):
        run = next(stage for stage in found.stages if stage["stage"] == "playbook run")
        cpu = run["cpu_s"] + run["ansible_cpu_s"]
        for mb in WORKER_CANDIDATES_MB:
            vcpu = mb / FULL_VCPU_MB
            wall = cpu / min(vcpu, 6.0)  # a lower bound: the CPU work spread perfectly over the vCPUs
            tradeoff.append({"playbook": label, "mb": mb, "vcpu": round(vcpu, 2), "cpu_s": round(cpu, 2),
                             "local_wall_s": run["wall_s"], "cpu_bound_wall_s": round(wall, 2),
                             "usd_per_1000_cpu": round(1000 * wall * mb / 1024 * LAMBDA_GB_S_USD, 4),
                             "usd_per_1000_30s_wait": round(1000 * 30 * mb / 1024 * LAMBDA_GB_S_USD, 4)})
    argon2_cpu = verify["cpu_s"]
    return {
        "measurements": {name: {"tree_rss_mb": found.tree_rss_mb, "tree_pss_mb": found.tree_pss_mb,
                                "vmhwm_mb": round(found.hwm_mb, 1), "processes": found.tree_processes,
                                "wall_s": found.wall_s, "stages": found.stages}
                         for name, found in measurements.items()},
        "worker": {"peak_mb": round(worker_peak, 1), "fits_mb": step_at_least(worker_peak * headroom),
                   "peak_rss_sum_mb": max(worker5.tree_rss_mb, worker1.tree_rss_mb),
                   "fits_rss_sum_mb": step_at_least(max(worker5.tree_rss_mb, worker1.tree_rss_mb) * headroom),
                   "tradeoff": tradeoff},
        "chalice": chalice,
        "argon2": {"verify_cpu_s": argon2_cpu, "verify_wall_s": verify["wall_s"], "login_wall_s": login["wall_s"],
                   "login_cpu_s": login["cpu_s"], "verify_s_at": {mb: round(argon2_cpu * max(1.0, FULL_VCPU_MB / mb), 2)
                                                                 for mb in (256, 384, 512, 1024, 1769)}},
        "cold": {"import_cpu_s": import_stage["cpu_s"], "bind_cpu_s": bind_stage["cpu_s"],
                 "bind_mb": round(bind_stage["VmRSS"] - import_stage["VmRSS"], 1),
                 "s_at": {mb: round((import_stage["cpu_s"] + bind_stage["cpu_s"]) * max(1.0, FULL_VCPU_MB / mb), 1)
                          for mb in (256, 384, 512, 1024)}},
        "headroom": headroom,
    }


def print_report(report: dict, out: Any = sys.stdout) -> None:
    say = lambda text="": print(text, file=out)  # noqa: E731
    say(f"Peak memory per function, measured on this machine ({os.cpu_count()} CPUs); sizes in MB")
    say(f"(tree = the child and every process under it, sampled; PSS splits shared pages; VmHWM = the "
        f"child's own peak)\n")
    rows = [["function", "tree RSS", "tree PSS", "own VmHWM", "processes", "wall s"]]
    for name, found in report["measurements"].items():
        rows.append([name, f"{found['tree_rss_mb']:.0f}", f"{found['tree_pss_mb']:.0f}", f"{found['vmhwm_mb']:.0f}",
                     str(found["processes"]), f"{found['wall_s']:.1f}"])
    for line in text_table(rows, {1, 2, 3, 4, 5}):
        say(line)
    say("\nStages (own RSS after the step, own peak so far, step's wall and CPU seconds):")
    for name, found in report["measurements"].items():
        say(f"  {name}: " + "; ".join(
            f"{stage['stage']} {stage['VmRSS']:.0f}/{stage['VmHWM']:.0f} MB "
            f"{stage['wall_s']:.2f}s/{stage['cpu_s']:.2f}cpu"
            + (f" (+ansible {stage['ansible_cpu_s']:.2f}cpu)" if "ansible_cpu_s" in stage else "")
            for stage in found["stages"]))
    argon2, cold = report["argon2"], report["cold"]
    say(f"\nargon2id verify (memory_cost 64 MiB, time_cost 3, parallelism 4) here: {argon2['verify_wall_s']:.2f} s "
        f"wall, {argon2['verify_cpu_s']:.2f} CPU-s; at a memory's CPU share about "
        + ", ".join(f"{s} s at {mb} MB" for mb, s in argon2["verify_s_at"].items())
        + f". The whole first login (clients included) took {argon2['login_wall_s']:.2f} s, "
          f"{argon2['login_cpu_s']:.2f} CPU-s.")
    say(f"Chalice cold start here: import app {cold['import_cpu_s']:.2f} CPU-s (argon2 hash at import included), "
        f"models.bind() {cold['bind_cpu_s']:.2f} CPU-s and +{cold['bind_mb']:.0f} MB; at a memory's CPU share about "
        + ", ".join(f"{s} s at {mb} MB" for mb, s in cold["s_at"].items()) + ".")
    worker = report["worker"]
    say(f"\nWorker: peak {worker['peak_mb']:.0f} MB (tree PSS); x{report['headroom']:g} headroom fits in "
        f"{worker['fits_mb']} MB. CPU trade-off: Lambda gives MB/1769 vCPU, so the run's C CPU-seconds (the worker and "
        f"ansible's whole tree, measured here) take at least C/vCPU s. That CPU-bound part costs the same at any "
        f"size (above 1,769 MB only as far as the work runs in parallel: ansible's forks do, its controller does "
        f"not), while waiting (a 30-s sleep, hosts answering) costs in proportion to memory:")
    rows = [["playbook", "MemorySize", "vCPU", "CPU-s", "CPU-bound wall >=", "$/1000 x CPU part",
             "$/1000 x 30 s waiting"]]
    for row in worker["tradeoff"]:
        rows.append([row["playbook"], str(row["mb"]), f"{row['vcpu']:.2f}", f"{row['cpu_s']:.1f}",
                     f"{row['cpu_bound_wall_s']:.1f} s", f"${row['usd_per_1000_cpu']:.3f}",
                     f"${row['usd_per_1000_30s_wait']:.3f}"])
    for line in text_table(rows, {1, 2, 3, 4, 5, 6}):
        say("  " + line)
    say("\nProposed MemorySize (peak x headroom, rounded up to a usual step, Chalice functions >= 256 MB):")
    for name, found in report["chalice"].items():
        say(f"  {name:20} peak {found['peak_mb']:5.0f} MB -> {found['proposed_mb']} MB")
    say(f"  {'Worker':20} peak {worker['peak_mb']:5.0f} MB -> at least {worker['fits_mb']} MB; by the RSS sum "
        f"({worker['peak_rss_sum_mb']:.0f} MB, shared pages counted in every process) {worker['fits_rss_sum_mb']} MB; "
        f"see the CPU trade-off")


def text_table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    def line(row: list[str]) -> str:
        return "  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row))
    return [line(rows[0])] + [line(row) for row in rows[1:]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=0.05, help="sampling interval, s (default 0.05)")
    parser.add_argument("--headroom", type=float, default=1.5, help="peak multiplier for a proposal (default 1.5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--arguments", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, json.loads(args.arguments))
        return 0
    return run_benchmark(lambda: measure_all(args), args.json, print_report, lambda report: 0)


if __name__ == "__main__":
    sys.exit(main())
