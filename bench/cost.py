#!/usr/bin/env python3
"""AWS cost per 1,000 executions of a 30-second playbook, and per month idle, at list prices.

    .venv/bin/python bench/cost.py                      # 3 executions of a 30-s playbook, in turn
    .venv/bin/python bench/cost.py --markdown           # the same tables in markdown (for the README)
    .venv/bin/python bench/cost.py --executions 5 --json
    .venv/bin/python bench/cost.py --pause 5            # quicker: a 5-s playbook, scaled to 30 s

Targets: at most $1.50 per 1,000 executions of a 30-second playbook, at most $2 a month idle.

What is priced, and where each count comes from:
- Settings, from infra/template.yaml (chalicelib.platform.template): the Worker's MemorySize and
  EphemeralStorage, the heartbeat window, the KMS keys (and their rotation), the
  tables with point-in-time recovery, the SQS event sources. The Chalice functions' memory is not
  in that file until packaging: it is taken from .chalice/config.json (`lambda_memory_size`, the
  function's entry in the stage, the stage's, the function's top-level entry, the top level's), else Chalice's default 256 MB; the
  output says which.
- Counts, from real executions in local mode (common.LocalMode, with RUNNER_LOG_AWS_CALLS=1): a
  job (one host, a sealed SSH key, one RESULT callback to a receiver here) whose playbook sleeps
  --pause seconds in a `command` task between two debug tasks, started --executions times over
  HTTP, one after the other (--concurrent: at once; but then the workers share this machine's
  CPUs, which Lambda's do not, and their wall time grows), each polled every --poll seconds until
  it ends, then its log read once, as a client would. Counted per execution:
  * the API requests made and the AWS calls of each (local mode's X-Runner-AWS-Calls header);
  * the worker's and the callback sender's AWS calls, every thread included, and the worker's
    wall time per invocation (local mode's invocation log, localmode/invocations.py);
  * the Step Functions state transitions of the execution workflow and of its TTL control
    workflow (the emulator's get_execution_history): one billed transition per `*StateEntered`
    event, which is every state entered, the first included (Step Functions bills "each time a
    step of your workflow is executed"; moto runs no retries, which would bill more), and the
    DynamoDB and SQS requests their service integrations make (`TaskScheduled` events);
  * DynamoDB request units, from the calls and the sizes of the items the execution left
    (DynamoDB's item-size rules): a write of the execution item costs ceil(size / 1 KB) WRU,
    twice (its table's local secondary index projects ALL attributes, so every write rewrites the
    index entry too), a failed conditional write once; an event item ceil(size / 1 KB) each; a
    delivery record ceil(size / 1 KB); the run-slot counter on the account item 1. Every GetItem
    reads ceil(size / 4 KB) RRU of the execution item (strongly consistent: an upper bound for
    the others), a Query 1 RRU, the log's Query ceil(sum of event sizes / 4 KB).
  * SQS: every SendMessage(Batch)/DeleteMessage call made, plus, for each message a function gets
    through an event source mapping, the ReceiveMessage and DeleteMessage Lambda's poller makes
    (batch size 1 on AWS for both queues).
- Lambda: the worker bills its measured wall time (the median) at its MemorySize (and /tmp beyond 512 MB);
  the Chalice functions a stated duration per invocation (below), at their memory. Since
  2025-08-01 Lambda bills the INIT phase of every cold start: counted as one cold start per
  execution for each function on its path (executions spread over a month find no warm
  environment: an upper bound, printed apart from the warm total). A cold start is what a fresh
  interpreter takes here to `import app` and bind the models (a Chalice function's INIT and the
  setup of its first invocation; the token authorizer binds only the signing key's), or to `import
  runner_lambda.handler` and build the worker's
  clients; billed as its CPU time stretched by the CPU share Lambda gives that memory (1,769 MB =
  1 vCPU; no INIT boost assumed). The worker's duration is
  the median of its invocations: one local worker serves the executions in turn, so its first
  invocation is cold and the median a warm one (the cold part is in the cold-start row).
- --pause other than 30: the duration-dependent terms (worker wall time, heartbeats, the
  supervisor's reads every 0.5 s, the client's polls) are shifted to what 30 s would make.

Idle per month: the KMS key (+$1/month for each of its first two yearly rotations when rotation
is on; it also seals the token signing key, kept in the accounts table: no secret to pay for),
the schedule_reconciler's hourly invocations, the long polling of each SQS event source mapping
(Lambda's 5 pollers, 20-s receives, billed as SQS requests), point-in-time
recovery and storage of empty tables ($0: both bill per GB), the worker's image in ECR (an
assumed size: no image is built here). Free tiers are left out: these are list prices.

Exit code 0 when both targets pass, 1 when one fails, 2 when it could not run.
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
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable

import boto3

from common import (FINAL_STATUSES, ROOT, VENV_BIN, Client, Deadline, Jobs, LocalMode, WebhookReceiver, add_standard_arguments,
                    event_epoch_ms, file_url, job_spec, log, make_repository, median, run_benchmark,
                    scratch_directory, wait_for)

sys.path.insert(0, str(ROOT))
from chalicelib.platform.template import load_template, resources  # noqa: E402
from localmode import invocations  # noqa: E402

# --------------------------------------------------------------------------- prices

PRICES_AS_OF = "2026-11-30"
REGION = "us-east-1"


@dataclass(frozen=True)
class Price:
    """One list price: dollars per `unit`, and where it is published."""

    usd: float
    unit: str
    source: str


LAMBDA = "https://aws.amazon.com/lambda/pricing/"
APIGW = "https://aws.amazon.com/api-gateway/pricing/"
SFN = "https://aws.amazon.com/step-functions/pricing/"
SQS = "https://aws.amazon.com/sqs/pricing/"
DDB = "https://aws.amazon.com/dynamodb/pricing/on-demand/"
KMS = "https://aws.amazon.com/kms/pricing/"
CW = "https://aws.amazon.com/cloudwatch/pricing/"
EB = "https://aws.amazon.com/eventbridge/pricing/"
ECR = "https://aws.amazon.com/ecr/pricing/"
FARGATE = "https://aws.amazon.com/fargate/pricing/"

# us-east-1 list prices, without free tiers, as of PRICES_AS_OF.
PRICES: dict[str, Price] = {
    "lambda_gb_s": Price(0.0000166667, "GB-second (x86)", LAMBDA),
    "lambda_gb_s_arm": Price(0.0000133334, "GB-second (Arm/Graviton)", LAMBDA),
    "lambda_request": Price(0.20 / 1e6, "request", LAMBDA),
    "lambda_tmp_gb_s": Price(0.0000000309, "GB-second of /tmp beyond 512 MB", LAMBDA),
    "apigw_rest_request": Price(3.50 / 1e6, "REST API request (first 333 M a month)", APIGW),
    "sfn_transition": Price(0.025 / 1000, "Standard workflow state transition", SFN),
    "sfn_api_call": Price(0.0, "API call (StartExecution, SendTask*): not billed", SFN),
    "sqs_request": Price(0.40 / 1e6, "standard queue request (per 64 KB)", SQS),
    "ddb_wru": Price(0.625 / 1e6, "on-demand write request unit", DDB),
    "ddb_rru": Price(0.125 / 1e6, "on-demand read request unit", DDB),
    "ddb_storage_gb_month": Price(0.25, "GB-month of table storage", DDB),
    "ddb_pitr_gb_month": Price(0.20, "GB-month of point-in-time recovery", DDB),
    "kms_key_month": Price(1.00, "customer managed key-month", KMS),
    "kms_rotation_month": Price(1.00, "key-month per rotation (first two only)", KMS),
    "kms_request": Price(0.03 / 10000, "request", KMS),
    "logs_ingest_gb": Price(0.50, "GB of logs ingested", CW),
    "scheduler_invocation": Price(1.00 / 1e6, "Scheduler invocation (after 14 M free a month)", EB),
    "ecr_gb_month": Price(0.10, "GB-month of image storage", ECR),
    # Billed per second from the start of the image pull to the task's end, one minute at least.
    "fargate_vcpu_s": Price(0.04048 / 3600, "Fargate vCPU-second (Linux/x86; per second, 1-minute minimum)", FARGATE),
    "fargate_gb_s": Price(0.004445 / 3600, "Fargate GB-second (Linux/x86; per second, 1-minute minimum)", FARGATE),
}

# --------------------------------------------------------------------------- stated assumptions

TARGET_PER_1000_USD = 1.50
TARGET_IDLE_USD = 2.00
TARGET_PLAYBOOK_S = 30.0
FULL_VCPU_MB = 1769                 # Lambda: 1,769 MB of memory = one vCPU
API_REQUEST_S = 0.100               # billed per warm API request (1-3 DynamoDB calls of ~5-10 ms, JSON)
AUTHORIZER_S = 0.020                # a warm token check (HS256 with the cached key)
CALLBACK_MESSAGE_S = 0.150          # a warm callback_sender message (reads, a POST to a receiver online)
SLOT_MESSAGE_S = 0.050              # a warm slot_keeper message (a few small DynamoDB items, one SendTaskSuccess)
AUTHORIZER_TTL_S = 300              # API Gateway caches an authorizer's answer per token (Chalice's default)
AUTHORIZER_CALLS_PER_EXECUTION = 1  # upper bound: a 30-s execution outlives no cache entry, but may start one
LOG_BYTES_PER_INVOCATION = 1024     # START/END/REPORT lines (~350 B) and a few of ours
ESM_POLLERS = 5                     # Lambda's SQS pollers per event source mapping when idle
ESM_RECEIVES_PER_POLLER_MINUTE = 3  # 20-second long polls
ECR_IMAGE_GB = 0.5                  # the worker image (Lambda Python base + git/ssh + ansible + deps), assumed
RECONCILER_S = 0.5                  # an hourly reconcile of an empty schedules table, warm part
DAYS_PER_MONTH = 30
CHALICE_DEFAULT_MB = 256
# Runs whose TTL does not fit in a Lambda invocation run as Fargate tasks (one per run).
FARGATE_MINIMUM_S = 60              # Fargate bills at least a minute per task
FARGATE_START_S = 40                # assumed: image pull (~0.5 GB, uncached: every task is a fresh microVM) and start
FARGATE_RUN_MINUTES = (60, 180)     # the long runs priced: an hour, and the reference's default TTL of 180 min
LAUNCHER_S = 0.3                    # a warm fargate_launcher message (one RunTask)
SUPERVISOR_POLL_S = 0.5             # runner_lambda/supervision.py POLL_SECONDS: a consistent GetItem each

PLAYBOOK = "cost.yml"


def playbook(pause: float) -> str:
    """A playbook of three tasks on every host: debug, `sleep <pause>` as a command, debug."""
    return ("- hosts: all\n  gather_facts: false\n  tasks:\n"
            "    - name: begin\n      debug:\n        msg: begin\n"
            f"    - name: work\n      command: sleep {pause:g}\n      changed_when: false\n"
            "    - name: end\n      debug:\n        msg: end\n")


# --------------------------------------------------------------------------- settings

@dataclass
class FunctionMemory:
    """A function's MemorySize and where it was read."""

    name: str
    mb: int
    source: str


CHALICE_LOGICAL_IDS = {"api_handler": "APIHandler", "token_authorizer": "TokenAuthorizer",
                       "schedule_trigger": "ScheduleTrigger", "schedule_reconciler": "ScheduleReconciler",
                       "callback_sender": "CallbackSender", "slot_keeper": "SlotKeeper",
                       "slot_reconciler": "SlotReconciler",
                       "fargate_launcher": "FargateLauncher"}


@dataclass
class Settings:
    """What the template and .chalice/config.json say about what bills."""

    memory: dict[str, FunctionMemory]
    worker_tmp_mb: int
    heartbeat_s: float
    kms_keys: int
    kms_rotating: int
    pitr_tables: list[str]
    tables: list[str]
    sqs_event_sources: list[str]
    schedules_per_month: dict[str, float]
    fargate_vcpu: float = 1.0
    fargate_gb: float = 2.0


def chalice_memory(name: str, config: dict, stage: str) -> tuple[int | None, str]:
    """`lambda_memory_size` of a Chalice function, looked up as Chalice does (the stage's function
    entry, the stage, the top level's function entry, the top level)."""
    stage_config = config.get("stages", {}).get(stage, {})
    scopes = ((f"stages.{stage}.lambda_functions.{name}", stage_config.get("lambda_functions", {}).get(name, {})),
              (f"stages.{stage}", stage_config),
              (f"lambda_functions.{name}", config.get("lambda_functions", {}).get(name, {})),
              ("top level", config))
    for where, scope in scopes:
        if "lambda_memory_size" in scope:
            return int(scope["lambda_memory_size"]), f".chalice/config.json {where}"
    return None, ""


def read_settings(stage: str) -> Settings:
    """The billing-relevant settings of the template and the Chalice configuration."""
    template = load_template()
    functions = resources(template, "AWS::Serverless::Function") | resources(template, "AWS::Lambda::Function")
    global_memory = template.get("Globals", {}).get("Function", {}).get("MemorySize")
    try:
        config = json.loads((ROOT / ".chalice" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    memory: dict[str, FunctionMemory] = {}
    worker = functions.get("Worker", {})
    memory["worker"] = FunctionMemory("Worker", int(worker.get("MemorySize", global_memory or 128)),
                                      "infra/template.yaml Worker.MemorySize" if "MemorySize" in worker
                                      else "template Globals / Lambda default")
    for name, logical_id in CHALICE_LOGICAL_IDS.items():
        properties = functions.get(logical_id, {})
        if "MemorySize" in properties:
            memory[name] = FunctionMemory(name, int(properties["MemorySize"]),
                                          f"infra/template.yaml {logical_id}.MemorySize")
            continue
        mb, source = chalice_memory(name, config, stage)
        if mb is None and global_memory:
            mb, source = int(global_memory), "infra/template.yaml Globals.Function.MemorySize"
        memory[name] = FunctionMemory(name, mb or CHALICE_DEFAULT_MB,
                                      source or f"not set in the template nor .chalice/config.json: Chalice's default")
    tables = resources(template, "AWS::DynamoDB::Table")
    keys = resources(template, "AWS::KMS::Key")
    parameters = template.get("Parameters", {})
    heartbeat = parameters.get("HeartbeatSeconds", {}).get("Default", 60)
    event_sources = [f"{logical_id} <- {source['Properties']['Queue']['Fn::GetAtt'][0]}"
                     for logical_id, properties in functions.items()
                     for source in (properties.get("Events") or {}).values() if source.get("Type") == "SQS"]
    schedules: dict[str, float] = {}
    from app import app as chalice_app  # the Chalice functions' event sources (importing app calls no AWS)
    for source in chalice_app.event_sources:
        kind = type(source).__name__
        if kind == "SQSEventConfig":
            event_sources.append(f"{source.name} <- {source.queue}")
        elif kind == "ScheduledEventConfig":
            schedules[source.name] = per_month(source.schedule_expression)
    return Settings(
        memory=memory, worker_tmp_mb=int((worker.get("EphemeralStorage") or {}).get("Size", 512)),
        heartbeat_s=float(heartbeat), kms_keys=len(keys),
        kms_rotating=sum(1 for key in keys.values() if key.get("EnableKeyRotation")),
        pitr_tables=sorted(name for name, properties in tables.items() if (
            properties.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled")),
        tables=sorted(tables), sqs_event_sources=event_sources, schedules_per_month=schedules,
        fargate_vcpu=int(parameters.get("FargateCpu", {}).get("Default", 1024)) / 1024,
        fargate_gb=int(parameters.get("FargateMemory", {}).get("Default", 2048)) / 1024)


def per_month(expression: Any) -> float:
    """How many times a month a Chalice Rate fires (a Cron is counted as hourly: none is used)."""
    minutes = {"MINUTES": 1, "HOURS": 60, "DAYS": 1440}
    if hasattr(expression, "value") and getattr(expression, "unit", None) in minutes:
        return DAYS_PER_MONTH * 1440 / (expression.value * minutes[expression.unit])
    return DAYS_PER_MONTH * 24.0


# --------------------------------------------------------------------------- DynamoDB item sizes

def attribute_size(value: dict) -> int:
    """The size DynamoDB bills for one attribute value (low-level AttributeValue form)."""
    kind, content = next(iter(value.items()))
    if kind == "S":
        return len(content.encode("utf-8"))
    if kind == "N":
        digits = content.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(content)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(attribute_size({kind[0]: item}) for item in content)
    if kind == "L":
        return 3 + sum(attribute_size(item) + 1 for item in content)
    if kind == "M":
        return 3 + sum(len(name.encode("utf-8")) + attribute_size(item) + 1 for name, item in content.items())
    return 0


def item_size(item: dict) -> int:
    """The size of an item: each attribute's name and value."""
    return sum(len(name.encode("utf-8")) + attribute_size(value) for name, value in item.items())


def units(size: int, unit: int) -> int:
    """Request units of an item of `size` bytes (1 KB for writes, 4 KB for reads), at least one."""
    return max(1, math.ceil(size / unit))


# --------------------------------------------------------------------------- what an execution did

@dataclass
class ApiRequest:
    kind: str
    seconds: float
    calls: list[str]


@dataclass
class Execution:
    """What one execution of the benchmark made, as measured."""

    execution_id: str
    status: str = ""
    requests: list[ApiRequest] = field(default_factory=list)
    worker_seconds: float | None = None
    worker_cpu_s: float | None = None
    worker_started_ms: float | None = None
    worker_calls: Counter = field(default_factory=Counter)
    claimed_ms: float | None = None      # timers[0]: the worker's claim and its final status write
    finished_ms: float | None = None
    events_ms: list[float] = field(default_factory=list)  # the ansible-runner events' `created`
    transitions: int = 0
    workflow_tasks: list[tuple[str, str, str, bool]] = field(default_factory=list)  # state, service, action, ok
    item_bytes: int = 0
    event_bytes: list[int] = field(default_factory=list)
    delivery_bytes: list[int] = field(default_factory=list)


def ssh_key_base64() -> str:
    """A fresh Ed25519 private key, OpenSSH PEM, base64: a job's sealed secret the worker opens."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                     serialization.NoEncryption())
    return base64.b64encode(pem).decode("ascii")


def timed(client: Client, record: Execution, kind: str, method: str, path: str, body: Any = None,
          expect: int | None = None) -> Any:
    """One API request, recorded on the execution with its AWS calls; its JSON (or text for the log)."""
    started = time.perf_counter()
    answer = client.request(method, path, body, expect=expect)
    seconds = time.perf_counter() - started
    header = answer.headers.get("X-Runner-AWS-Calls")
    if header is None:
        raise RuntimeError(f"{method} {path}: no X-Runner-AWS-Calls header (is this local mode?)")
    record.requests.append(ApiRequest(kind, seconds, [] if header == "-" else header.split(",")))
    try:
        return answer.json()
    except ValueError:
        return answer.text


class Emulator:
    """boto3 clients of local mode's emulator, signed with its access key (emulator.json)."""

    def __init__(self, state_dir: Path) -> None:
        self.environment = json.loads((state_dir / "emulator.json").read_text(encoding="utf-8"))["environment"]
        self._clients: dict[str, Any] = {}

    def __call__(self, service: str) -> Any:
        if service not in self._clients:
            env = self.environment
            self._clients[service] = boto3.client(
                service, region_name=env["AWS_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"],
                aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key="local", aws_session_token="local")
        return self._clients[service]

    def workflows(self, execution_id: str) -> list[str]:
        """The ARNs of the execution workflow of attempt 1 and of every control workflow of the execution."""
        sfn = self("stepfunctions")
        machine = self.environment["RUNNER_EXECUTION_STATE_MACHINE_ARN"]
        found = [machine.replace(":stateMachine:", ":execution:", 1) + f":{execution_id}-1"]
        control = self.environment["RUNNER_CONTROL_STATE_MACHINE_ARN"]
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=control):
            found += [item["executionArn"] for item in page["executions"] if item["name"].startswith(f"{execution_id}-")]
        return found

    def workflows_ended(self, execution_id: str) -> bool:
        sfn = self("stepfunctions")
        arns = self.workflows(execution_id)
        return len(arns) >= 2 and all(sfn.describe_execution(executionArn=arn)["status"] != "RUNNING" for arn in arns)

    def callback_queue_drained(self) -> bool:
        attributes = self("sqs").get_queue_attributes(QueueUrl=self.environment["RUNNER_CALLBACK_QUEUE_URL"],
                                                      AttributeNames=["All"])["Attributes"]
        return all(attributes[name] == "0" for name in ("ApproximateNumberOfMessages",
                                                        "ApproximateNumberOfMessagesNotVisible",
                                                        "ApproximateNumberOfMessagesDelayed"))

    def callback_queue_settled(self) -> bool:
        """Empty, and still empty 2 s later (the sender may have been handling what it received)."""
        if not self.callback_queue_drained():
            return False
        time.sleep(2)
        return self.callback_queue_drained()

    def read_workflows(self, record: Execution) -> None:
        """Transitions and service-integration tasks of the execution's workflows, from their histories."""
        sfn = self("stepfunctions")
        for arn in self.workflows(record.execution_id):
            state = ""
            for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
                for event in page["events"]:
                    kind = event["type"]
                    if kind.endswith("StateEntered"):
                        record.transitions += 1
                        state = event["stateEnteredEventDetails"]["name"]
                    elif kind == "TaskScheduled":
                        details = event["taskScheduledEventDetails"]
                        record.workflow_tasks.append((state, details["resourceType"], details["resource"], True))
                    elif kind in ("TaskFailed", "TaskTimedOut") and record.workflow_tasks:
                        last = record.workflow_tasks[-1]
                        record.workflow_tasks[-1] = (last[0], last[1], last[2], False)

    def read_items(self, record: Execution, job_id: str) -> None:
        """The sizes of the execution item, its event items and its delivery records."""
        dynamodb = self("dynamodb")
        env = self.environment
        item = dynamodb.get_item(TableName=env["RUNNER_EXECUTIONS_TABLE"], ConsistentRead=True,
                                 Key={"jobId": {"S": job_id}, "executionId": {"S": record.execution_id}})["Item"]
        record.item_bytes = item_size(item)
        for table, sizes in (("RUNNER_EXECUTION_EVENTS_TABLE", record.event_bytes),
                             ("RUNNER_DELIVERIES_TABLE", record.delivery_bytes)):
            for page in dynamodb.get_paginator("query").paginate(
                    TableName=env[table], KeyConditionExpression="executionId = :e",
                    ExpressionAttributeValues={":e": {"S": record.execution_id}}):
                sizes += [item_size(found) for found in page["Items"]]
                if sizes is record.event_bytes:
                    record.events_ms += [moment for found in page["Items"]
                                         if (moment := event_epoch_ms((found.get("created") or {}).get("S")))]


def read_invocations(log_path: Path) -> list[dict]:
    """The invocation records local mode logged (localmode/invocations.py)."""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return [record for record in map(invocations.parse, text.splitlines()) if record is not None]


@dataclass(frozen=True)
class ColdStart:
    """What a cold start took here: wall and CPU seconds of a fresh interpreter doing `code`."""

    code: str
    wall_s: float
    cpu_s: float

    def billed_s(self, mb: int) -> float:
        """Its duration at `mb`: its CPU time stretched by Lambda's CPU share (no INIT boost assumed).

        CPU time, not wall time: it is CPU-bound (imports, models loaded), and the wall time here
        grows with whatever else this machine runs.
        """
        return self.cpu_s * cpu_scale(mb)


def cold_start(code: str, env: dict[str, str]) -> ColdStart:
    """Run `code` in a fresh interpreter; its wall and CPU seconds (the best of two)."""
    python = VENV_BIN / "python"
    command = [str(python if python.exists() else sys.executable), "-c", code]
    best: ColdStart | None = None
    for _ in range(2):
        before, started = os.times(), time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
        after, wall = os.times(), time.perf_counter() - started
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        if best is None or cpu < best.cpu_s:
            best = ColdStart(code, round(wall, 3), round(cpu, 3))
    assert best is not None
    return best


# A cold start: the INIT (the import) and what the first invocation sets up (models.bind(): a
# PynamoDB client per model; the worker's other clients). The worker's wall time is the median of
# the measured invocations, which one local worker serves in turn: its first is cold, the others warm.
CHALICE_COLD = "import app; from chalicelib.platform import models; models.bind()"
# The token check reads the signing key only: it binds that one item's model, not every table's.
AUTHORIZER_COLD = "import app; from chalicelib.platform import models; models.bind_one(models.SigningKeyItem)"
WORKER_COLD = ("import runner_lambda.handler as handler; from chalicelib.platform import models; "
               "handler.dependencies(); models.bind()")


def measure_init() -> dict[str, ColdStart]:
    """The cold starts of the Chalice functions and of the worker, measured here."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
           "AWS_ACCESS_KEY_ID": "cost", "AWS_SECRET_ACCESS_KEY": "cost", "PYTHONDONTWRITEBYTECODE": "1"}
    cold_start("import json", env)  # warm the page cache
    return {"app": cold_start(CHALICE_COLD, env), "authorizer": cold_start(AUTHORIZER_COLD, env),
            "worker": cold_start(WORKER_COLD, env)}


def run_executions(args: argparse.Namespace) -> dict:
    """Start local mode, run the executions, and gather what they made."""
    ttl_minute_s = int(args.pause + 45)  # the TTL workflow (executionTtl 1 min) must end after the run
    with ExitStack() as stack:
        work = stack.enter_context(scratch_directory("runner-cost-"))
        repo = make_repository(work, {PLAYBOOK: playbook(args.pause)})
        receiver = stack.enter_context(WebhookReceiver())
        local = LocalMode(args.startup_timeout, env={
            "RUNNER_LOCAL_WORKERS": str(args.executions if args.concurrent else 1), invocations.VARIABLE: "1",
            "RUNNER_TTL_MINUTE_SECONDS": str(ttl_minute_s),
            "RUNNER_MAX_CONCURRENT_PER_ACCOUNT": str(max(4, args.executions))})
        credentials = stack.enter_context(local)
        client = stack.enter_context(Client(credentials.base_url, credentials.token, timeout=60))
        jobs = Jobs(client, credentials.account)
        emulator = Emulator(local.state_dir)
        job_id = jobs.create(job_spec(
            file_url(repo), PLAYBOOK, description="cost bench", host_vars={"ansible_connection": "local"},
            sshPrivateKey=ssh_key_base64(), callbacks=[{"url": receiver.url, "level": "RESULT"}], executionTtl=1))
        log(f"job {job_id}: {args.executions} executions of a {args.pause:g}-s playbook "
            f"({'at once' if args.concurrent else 'one after the other'}), polled every {args.poll:g} s")

        base = f"/jobs/{credentials.account}/{job_id}"
        records: list[Execution] = [Execution("") for _ in range(args.executions)]

        def start(record: Execution) -> None:
            answer = timed(client, record, "POST start", "POST", f"{base}/start", {}, expect=201)
            record.execution_id = answer["execution_id"]

        def drive(group: list[Execution]) -> None:
            """Start the group's executions at once; poll each every --poll s until it ends, then read its log."""
            threads = [threading.Thread(target=start, args=(record,)) for record in group]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if not all(record.execution_id for record in group):
                raise RuntimeError("an execution did not start")
            deadline = Deadline(args.pause + 240, "the executions")
            pending = list(group)
            next_poll = time.monotonic() + args.poll
            while pending:
                time.sleep(max(0.0, next_poll - time.monotonic()))
                next_poll += args.poll
                for record in list(pending):
                    path = f"{base}/executions/{record.execution_id}"
                    answer = timed(client, record, "GET execution", "GET", path, expect=200)
                    if answer["status"] in FINAL_STATUSES:
                        record.status = answer["status"]
                        if answer["timers"]:
                            record.claimed_ms = answer["timers"][0]["start"]
                            record.finished_ms = answer["timers"][0]["end"]
                        timed(client, record, "GET log", "GET", f"{path}/log", expect=200)
                        pending.remove(record)
                deadline.check(f"{len(pending)} not ended")

        started = time.monotonic()
        # One at a time by default: on Lambda every worker has its CPU to itself, here they would share two.
        for group in ([records] if args.concurrent else [[record] for record in records]):
            drive(group)
        log(f"executions ended after {time.monotonic() - started:.1f} s: {[record.status for record in records]}")

        wait_for(lambda: all(emulator.workflows_ended(record.execution_id) for record in records),
                 ttl_minute_s + 90, "the execution and TTL workflows to end", interval=1.0)
        wait_for(lambda: all(receiver.deliveries[record.execution_id] >= 1 for record in records),
                 60, "the RESULT callbacks", interval=0.5)
        wait_for(emulator.callback_queue_settled, 60, "the callback queue to drain", interval=0.5)
        log(f"workflows and callbacks done after {time.monotonic() - started:.1f} s")

        for record in records:
            emulator.read_workflows(record)
            emulator.read_items(record, job_id)
        logged = read_invocations(local.log_path)
    by_execution = {record.execution_id: record for record in records}
    senders = [entry for entry in logged if entry.get("function") == "callback_sender"]
    keepers = [entry for entry in logged if entry.get("function") == "slot_keeper"]
    for entry in logged:
        record = by_execution.get(entry.get("execution"))
        if entry.get("function") == "worker" and record is not None:
            record.worker_seconds = (record.worker_seconds or 0.0) + entry["seconds"]
            record.worker_started_ms = entry["started"] * 1000
            record.worker_cpu_s = entry.get("cpu_s")
            record.worker_calls.update(entry["calls"])
    missing = [record.execution_id for record in records if record.worker_seconds is None]
    if missing:
        raise RuntimeError(f"no worker invocation logged for {missing}: see {local.log_path}")
    return {"records": records, "senders": senders, "keepers": keepers,
            "deliveries": sum(receiver.deliveries.values())}


# --------------------------------------------------------------------------- pricing

@dataclass
class Line:
    """One row of a cost table."""

    component: str
    count: float           # per 1,000 executions (or per month for idle)
    unit: str
    price: str             # key of PRICES
    note: str = ""

    @property
    def usd(self) -> float:
        return self.count * PRICES[self.price].usd


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def cpu_scale(mb: int) -> float:
    """How much slower CPU-bound work runs at `mb` than on a full vCPU (1 at 1,769 MB and above)."""
    return max(1.0, FULL_VCPU_MB / mb)


def dynamo_units(record: Execution, senders_per_execution: Counter, keepers_per_execution: Counter) -> tuple[float, float]:
    """(WRU, RRU) of one execution, by the rules in the module's docstring."""
    item = record.item_bytes
    execution_write = 2 * units(item, 1024)  # the table and its ALL-projection LSI
    read = units(item, 4096)
    wru = rru = 0.0
    api_calls = Counter(call for request in record.requests for call in request.calls)
    log_queries = sum(1 for request in record.requests if request.kind == "GET log"
                      for call in request.calls if call == "dynamodb.Query")
    for calls, who in ((api_calls, "api"), (record.worker_calls, "worker"), (senders_per_execution, "sender"),
                       (keepers_per_execution, "keeper")):
        for call, count in calls.items():
            service, action = call.split(".", 1)
            if service != "dynamodb":
                continue
            if action == "BatchWriteItem":
                continue  # the event items, counted from the table below
            if who == "keeper":  # the run slot entries: small items, no index
                if action == "TransactWriteItems":
                    wru += count * 2 * 3  # three items, transactions bill double
                elif action in ("PutItem", "UpdateItem", "DeleteItem"):
                    wru += count
                elif action in ("GetItem", "Query"):
                    rru += count
                continue
            if action in ("PutItem", "UpdateItem", "DeleteItem"):
                if who == "sender" and action == "PutItem":
                    wru += count * units(int(mean(record.delivery_bytes) or 100), 1024)
                else:
                    wru += count * execution_write
            elif action == "TransactWriteItems":
                wru += count * 2 * 2 * execution_write  # two items, transactions bill double
            elif action in ("GetItem", "BatchGetItem"):
                rru += count * read
            elif action in ("Query", "Scan"):
                rru += count
    if log_queries:
        rru += log_queries * (units(sum(record.event_bytes), 4096) - 1)
    wru += sum(units(size, 1024) for size in record.event_bytes)
    for state, service, action, ok in record.workflow_tasks:
        if service != "dynamodb":
            continue
        if action == "getItem":
            rru += read
        else:
            wru += execution_write if ok else units(item, 1024)  # a failed condition writes no index entry
    return wru, rru


def per_execution_of(invocations_of_function: list[dict], n: int) -> tuple[float, Counter]:
    """A queue function's messages and AWS calls per execution, from its logged invocations."""
    calls: Counter = Counter()
    for entry in invocations_of_function:
        calls.update(entry["calls"])
    messages = sum(entry.get("messages", 1) for entry in invocations_of_function) / n
    return messages, Counter({call: count / n for call, count in calls.items()})


def per_execution_counts(measured: dict, settings: Settings, args: argparse.Namespace) -> dict:
    """Mean counts per execution, shifted to a 30-s playbook when --pause is not 30."""
    records: list[Execution] = measured["records"]
    n = len(records)
    shift = TARGET_PLAYBOOK_S - args.pause
    heartbeat_every = max(1.0, settings.heartbeat_s / 4)
    senders = measured["senders"]
    sender_messages, sender_calls_per_execution = per_execution_of(senders, n)
    keeper_messages, keeper_calls_per_execution = per_execution_of(measured["keepers"], n)

    requests = mean(len(record.requests) for record in records) + shift / args.poll
    polls_shift = shift / args.poll
    worker_calls: Counter = Counter()
    for record in records:
        worker_calls.update(record.worker_calls)
    worker_calls = Counter({call: count / n for call, count in worker_calls.items()})
    worker_calls["stepfunctions.SendTaskHeartbeat"] += shift / heartbeat_every
    worker_calls["dynamodb.GetItem"] += shift / SUPERVISOR_POLL_S
    api_calls: Counter = Counter()
    for record in records:
        for request in record.requests:
            api_calls.update(request.calls)
    api_calls = Counter({call: count / n for call, count in api_calls.items()})
    poll_calls = Counter()
    polls = [request for record in records for request in record.requests if request.kind == "GET execution"]
    for request in polls:
        poll_calls.update(request.calls)
    for call, count in poll_calls.items():
        api_calls[call] += polls_shift * count / max(1, len(polls))

    wru = rru = 0.0
    for record in records:
        w, r = dynamo_units(record, sender_calls_per_execution, keeper_calls_per_execution)
        wru += w
        rru += r
    wru, rru = wru / n, rru / n
    rru += shift / SUPERVISOR_POLL_S * units(int(mean(record.item_bytes for record in records)), 4096)

    sfn_sqs = mean(sum(1 for task in record.workflow_tasks if task[1] == "sqs") for record in records)
    all_calls = api_calls + worker_calls + sender_calls_per_execution + keeper_calls_per_execution
    sqs_calls = sum(count for call, count in all_calls.items()
                    if call.startswith("sqs.") and call not in ("sqs.ReceiveMessage",))
    esm_messages = 1 + sender_messages + keeper_messages  # the run message, each callback and slot message
    storage_bytes = mean(record.item_bytes + sum(record.event_bytes) + sum(record.delivery_bytes) for record in records)
    return {
        "worker_split_s": worker_split(records),
        "executions": n,
        "statuses": Counter(record.status for record in records),
        "worker_seconds": (median(record.worker_seconds for record in records) or 0.0) + shift,
        "worker_seconds_measured": [round(record.worker_seconds or 0.0, 3) for record in records],
        "worker_cpu_s": median(record.worker_cpu_s for record in records),
        "api_requests": requests,
        "api_request_kinds": Counter(request.kind for record in records for request in record.requests),
        "api_request_median_ms": sorted(request.seconds for record in records for request in record.requests)[
            sum(len(record.requests) for record in records) // 2] * 1000,
        "api_calls": api_calls, "worker_calls": worker_calls, "sender_calls": sender_calls_per_execution,
        "sender_messages": sender_messages, "keeper_messages": keeper_messages,
        "keeper_calls": keeper_calls_per_execution,
        "sender_seconds_per_message": (sum(entry["seconds"] for entry in senders) / max(1, sum(
            entry.get("messages", 1) for entry in senders))),
        "transitions": mean(record.transitions for record in records),
        "transitions_by_execution": [record.transitions for record in records],
        "workflow_tasks": Counter(f"{task[1]}:{task[2]}" for record in records for task in record.workflow_tasks),
        "wru": wru, "rru": rru,
        "item_bytes": mean(record.item_bytes for record in records),
        "event_items": mean(len(record.event_bytes) for record in records),
        "event_bytes": mean(sum(record.event_bytes) for record in records),
        "sqs_requests": sqs_calls + sfn_sqs + 2 * esm_messages,
        "kms_requests": sum(count for call, count in all_calls.items() if call.startswith("kms.")),
        "storage_bytes": storage_bytes,
        "deliveries": measured["deliveries"] / n,
    }


def worker_split(records: list[Execution]) -> dict[str, float | None]:
    """Where the worker's wall time went (medians over the executions, seconds)."""
    def part(of: Any) -> float | None:
        values = []
        for record in records:
            try:
                values.append(of(record) / 1000)
            except (TypeError, ValueError):
                continue
        return median(values)
    return {
        "to claim": part(lambda r: r.claimed_ms - r.worker_started_ms),
        "claim to first ansible event (clone, inventory, ansible start)": part(lambda r: min(r.events_ms) - r.claimed_ms),
        "ansible events": part(lambda r: max(r.events_ms) - min(r.events_ms)),
        "last event to final status": part(lambda r: r.finished_ms - max(r.events_ms)),
        "final status to handler end (cleanup, SendTaskSuccess)": part(
            lambda r: r.worker_started_ms + r.worker_seconds * 1000 - r.finished_ms),
    }


COLD_ROW = "Lambda cold starts, INIT and first-use setup"


def execution_lines(counts: dict, settings: Settings, init: dict[str, ColdStart]) -> list[Line]:
    """The cost rows per 1,000 executions."""
    k = 1000.0
    mem = {name: memory.mb for name, memory in settings.memory.items()}
    gb = {name: mb / 1024 for name, mb in mem.items()}
    chalice_on_path = ("api_handler", "token_authorizer", "callback_sender")
    lines = [
        Line(f"Lambda worker duration ({mem['worker']} MB x {counts['worker_seconds']:.1f} s)",
             k * counts["worker_seconds"] * gb["worker"], "GB-s", "lambda_gb_s"),
        Line(f"Lambda worker /tmp beyond 512 MB ({settings.worker_tmp_mb} MB)",
             k * counts["worker_seconds"] * max(0, settings.worker_tmp_mb - 512) / 1024, "GB-s", "lambda_tmp_gb_s"),
        Line(f"Lambda api_handler duration ({mem['api_handler']} MB x {API_REQUEST_S * 1000:.0f} ms x "
             f"{counts['api_requests']:.1f} requests)",
             k * counts["api_requests"] * API_REQUEST_S * gb["api_handler"], "GB-s", "lambda_gb_s"),
        Line(f"Lambda token_authorizer duration ({mem['token_authorizer']} MB x {AUTHORIZER_S * 1000:.0f} ms)",
             k * AUTHORIZER_CALLS_PER_EXECUTION * AUTHORIZER_S * gb["token_authorizer"], "GB-s", "lambda_gb_s"),
        Line(f"Lambda callback_sender duration ({mem['callback_sender']} MB x {CALLBACK_MESSAGE_S * 1000:.0f} ms x "
             f"{counts['sender_messages']:.1f} messages)",
             k * counts["sender_messages"] * CALLBACK_MESSAGE_S * gb["callback_sender"], "GB-s", "lambda_gb_s"),
        Line(f"Lambda slot_keeper duration ({mem['slot_keeper']} MB x {SLOT_MESSAGE_S * 1000:.0f} ms x "
             f"{counts['keeper_messages']:.1f} messages: take, leave)",
             k * counts["keeper_messages"] * SLOT_MESSAGE_S * gb["slot_keeper"], "GB-s", "lambda_gb_s"),
        Line(COLD_ROW + " (worker, " + ", ".join(chalice_on_path) + ": one each per execution)",
             k * (init["worker"].billed_s(mem["worker"]) * gb["worker"]
                  + sum(init["authorizer" if name == "token_authorizer" else "app"].billed_s(mem[name]) * gb[name]
                        for name in chalice_on_path)),
             "GB-s", "lambda_gb_s"),
        Line("Lambda requests (worker, api_handler, token_authorizer, callback_sender, slot_keeper)",
             k * (1 + counts["api_requests"] + AUTHORIZER_CALLS_PER_EXECUTION + counts["sender_messages"]
                  + counts["keeper_messages"]),
             "requests", "lambda_request"),
        Line("API Gateway REST requests", k * counts["api_requests"], "requests", "apigw_rest_request"),
        Line("Step Functions state transitions (execution + TTL workflows)", k * counts["transitions"],
             "transitions", "sfn_transition"),
        Line("Step Functions API calls (StartExecution, SendTaskHeartbeat, SendTaskSuccess)",
             k * sum(count for call, count in (counts["api_calls"] + counts["worker_calls"]).items()
                     if call.startswith("stepfunctions.")), "calls", "sfn_api_call"),
        Line("SQS requests (sends, deletes, event source receives)", k * counts["sqs_requests"], "requests",
             "sqs_request"),
        Line("DynamoDB writes", k * counts["wru"], "WRU", "ddb_wru"),
        Line("DynamoDB reads", k * counts["rru"], "RRU", "ddb_rru"),
        Line("KMS requests (+1 webhook-secret Decrypt per cold callback_sender, +1 signing-key Decrypt per "
             "cold api_handler and token_authorizer)", k * (counts["kms_requests"] + 3), "requests", "kms_request"),
        Line("DynamoDB reads of the signing key's item (a consistent GetItem per cold api_handler and "
             "token_authorizer)", k * 2, "RRU", "ddb_rru"),
        Line("CloudWatch Logs ingestion", k * (1 + counts["api_requests"] + AUTHORIZER_CALLS_PER_EXECUTION
                                               + counts["sender_messages"]) * LOG_BYTES_PER_INVOCATION / 1e9,
             "GB", "logs_ingest_gb"),
        Line("DynamoDB storage, first month (items, events, deliveries)", k * counts["storage_bytes"] / 1e9,
             "GB-month", "ddb_storage_gb_month"),
        Line("DynamoDB point-in-time recovery, first month (execution items)", k * counts["item_bytes"] / 1e9,
             "GB-month", "ddb_pitr_gb_month"),
    ]
    return lines


def idle_lines(settings: Settings, init: dict[str, ColdStart], rotations: int) -> list[Line]:
    """The cost rows per idle month, `rotations` yearly key rotations done (0, 1, 2+)."""
    reconciles = sum(settings.schedules_per_month.values())
    scheduled = " + ".join(sorted(settings.schedules_per_month))
    reconciler_mb = settings.memory["schedule_reconciler"].mb
    reconciler_s = RECONCILER_S + init["app"].billed_s(reconciler_mb)  # every hourly run is a cold start
    polls = len(settings.sqs_event_sources) * ESM_POLLERS * ESM_RECEIVES_PER_POLLER_MINUTE * 60 * 24 * DAYS_PER_MONTH
    return [
        Line(f"KMS keys ({settings.kms_keys})", settings.kms_keys, "key-months", "kms_key_month"),
        Line(f"KMS key rotations ({settings.kms_rotating} keys rotating; {rotations} rotation(s) done)",
             settings.kms_rotating * min(rotations, 2), "key-months", "kms_rotation_month"),
        Line(f"SQS long polling by {len(settings.sqs_event_sources)} event source mappings "
             f"({ESM_POLLERS} pollers x {ESM_RECEIVES_PER_POLLER_MINUTE}/min each)", polls, "requests", "sqs_request"),
        Line(f"{scheduled} invocations ({reconciles:.0f}/month)", reconciles, "requests", "lambda_request"),
        Line(f"{scheduled} duration (cold, {reconciler_mb} MB x {reconciler_s:.1f} s)",
             reconciles * reconciler_s * reconciler_mb / 1024, "GB-s", "lambda_gb_s"),
        Line(f"{scheduled}: DynamoDB Scan of an empty table", reconciles * 1, "RRU", "ddb_rru"),
        Line(f"{scheduled} logs", reconciles * LOG_BYTES_PER_INVOCATION / 1e9, "GB", "logs_ingest_gb"),
        Line(f"DynamoDB storage + PITR of {len(settings.tables)} empty tables ({len(settings.pitr_tables)} with PITR)",
             0.0, "GB-month", "ddb_pitr_gb_month"),
        Line(f"ECR: the worker image (~{ECR_IMAGE_GB:g} GB, assumed)", ECR_IMAGE_GB, "GB-month", "ecr_gb_month"),
    ]


def fargate_run_lines(settings: Settings, run_seconds: float) -> list[Line]:
    """What one run of `run_seconds` on Fargate adds (the workflow, tables and webhooks cost as on Lambda)."""
    billed = max(FARGATE_MINIMUM_S, FARGATE_START_S + run_seconds)
    launcher_gb = settings.memory["fargate_launcher"].mb / 1024 if "fargate_launcher" in settings.memory else 0.25
    return [
        Line(f"Fargate vCPU ({settings.fargate_vcpu:g} vCPU x {billed:,.0f} s: the run + {FARGATE_START_S} s start, "
             f"at least {FARGATE_MINIMUM_S} s)", settings.fargate_vcpu * billed, "vCPU-s", "fargate_vcpu_s"),
        Line(f"Fargate memory ({settings.fargate_gb:g} GB x {billed:,.0f} s)", settings.fargate_gb * billed, "GB-s",
             "fargate_gb_s"),
        Line(f"fargate_launcher duration ({launcher_gb * 1024:.0f} MB x {LAUNCHER_S * 1000:.0f} ms)",
             launcher_gb * LAUNCHER_S, "GB-s", "lambda_gb_s"),
        Line("fargate_launcher request", 1, "requests", "lambda_request"),
        Line("Fargate queue (send, receive, delete)", 3, "requests", "sqs_request"),
    ]


def build_report(measured: dict, settings: Settings, init: dict[str, ColdStart], args: argparse.Namespace) -> dict:
    """Counts, cost rows, totals and verdicts."""
    counts = per_execution_counts(measured, settings, args)
    lines = execution_lines(counts, settings, init)
    total = sum(line.usd for line in lines)
    warm_total = total - sum(line.usd for line in lines if line.component.startswith(COLD_ROW))
    idle = {rotations: idle_lines(settings, init, rotations) for rotations in (0, 1, 2)}
    idle_totals = {rotations: sum(line.usd for line in rows) for rotations, rows in idle.items()}
    worker_gbs_per_mb = 1000 * counts["worker_seconds"] / 1024 * PRICES["lambda_gb_s"].usd
    worker_cost = lines[0].usd
    rest = total - worker_cost
    worker_mb_limit = (TARGET_PER_1000_USD - rest) / worker_gbs_per_mb if worker_gbs_per_mb else None
    warm_rest = warm_total - worker_cost
    worker_mb_limit_warm = (TARGET_PER_1000_USD - warm_rest) / worker_gbs_per_mb if worker_gbs_per_mb else None
    return {
        "settings": settings, "counts": counts, "init": init, "lines": lines, "total": total, "warm_total": warm_total,
        "idle": idle, "idle_totals": idle_totals, "worker_usd_per_mb": worker_gbs_per_mb,
        "worker_mb_limit": worker_mb_limit, "worker_mb_limit_warm": worker_mb_limit_warm,
        "pause": args.pause, "poll": args.poll, "warm_pass": warm_total <= TARGET_PER_1000_USD,
        "pass": total <= TARGET_PER_1000_USD, "idle_pass": {r: t <= TARGET_IDLE_USD for r, t in idle_totals.items()},
        "fargate": {minutes: fargate_run_lines(settings, minutes * 60) for minutes in FARGATE_RUN_MINUTES},
    }


# --------------------------------------------------------------------------- output

def usd(value: float) -> str:
    return f"${value:,.4f}" if value < 10 else f"${value:,.2f}"


def unit_price(key: str) -> str:
    price = PRICES[key]
    value = price.usd
    if value >= 0.01:
        return f"${value:g}"
    if value * 1e6 >= 0.01:
        return f"${value * 1e6:.4g}/M"
    return f"${value:.4g}"


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.3g}" if value else "0"


def table(rows: list[list[str]], markdown: bool, right: set[int]) -> list[str]:
    """Rows (the first is the header) as a text or markdown table."""
    if markdown:
        out = ["| " + " | ".join(rows[0]) + " |",
               "|" + "|".join("---:" if index in right else "---" for index in range(len(rows[0]))) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return out
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    def line(row: list[str]) -> str:
        return "  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row))
    return [line(rows[0]), "  ".join("-" * width for width in widths)] + [line(row) for row in rows[1:]]


def cost_rows(lines: list[Line], count_header: str) -> list[list[str]]:
    rows = [["component", count_header, "unit", "unit price", "cost"]]
    rows += [[line.component, number(line.count), line.unit, unit_price(line.price), usd(line.usd)] for line in lines]
    return rows


def print_report(report: dict, markdown: bool = False, out: Any = sys.stdout) -> None:
    """The settings, the counts, both cost tables, the verdicts and what dominates."""
    settings, counts, init = report["settings"], report["counts"], report["init"]
    say = lambda text="": print(text, file=out)  # noqa: E731
    heading = (lambda text: say(f"\n### {text}\n")) if markdown else (lambda text: say(f"\n{text}"))
    say(f"{'## ' if markdown else ''}AWS cost of Runner, {REGION} list prices as of {PRICES_AS_OF} (no free tier)")
    heading("Settings")
    for memory in settings.memory.values():
        say(f"{'- ' if markdown else '  '}{memory.name}: {memory.mb} MB ({memory.source})")
    say(f"{'- ' if markdown else '  '}Worker /tmp {settings.worker_tmp_mb} MB; heartbeat window "
        f"{settings.heartbeat_s:g} s "
        f"(a SendTaskHeartbeat every {max(1.0, settings.heartbeat_s / 4):g} s); SQS event sources: "
        f"{', '.join(settings.sqs_event_sources)}")
    heading("Measured in local mode, per execution")
    bullet = "- " if markdown else "  "
    shifted = "" if report["pause"] == TARGET_PLAYBOOK_S else (
        f" (measured with a {report['pause']:g}-s playbook; duration-dependent terms shifted to 30 s)")
    say(f"{bullet}{counts['executions']} executions {dict(counts['statuses'])}{shifted}")
    say(f"{bullet}worker wall time {counts['worker_seconds']:.2f} s (median of {counts['worker_seconds_measured']}); "
        "medians: " + ", ".join(f"{name} {value:.2f} s" for name, value in counts["worker_split_s"].items()
                                if value is not None))
    cpu = counts["worker_cpu_s"]
    if cpu is not None:
        vcpu = settings.memory["worker"].mb / FULL_VCPU_MB
        say(f"{bullet}worker CPU {cpu:.2f} CPU-s per invocation (the process and its reaped children, median): "
            f"alone on Lambda's {vcpu:.2f} vCPU a run would last about {TARGET_PLAYBOOK_S:g} s of sleep + "
            f"{cpu / min(vcpu, 1.0):.1f} s of CPU = {TARGET_PLAYBOOK_S + cpu / min(vcpu, 1.0):.1f} s (+ the AWS calls' "
            f"latency), against the {counts['worker_seconds']:.1f} s measured on this shared machine (billed above)")
    say(f"{bullet}API requests {counts['api_requests']:.1f} ({dict(counts['api_request_kinds'])} over all; "
        f"a poll every {report['poll']:g} s; local median {counts['api_request_median_ms']:.0f} ms, billed as "
        f"{API_REQUEST_S * 1000:.0f} ms each)")
    say(f"{bullet}AWS calls of the API requests: {fmt_calls(counts['api_calls'])}")
    say(f"{bullet}AWS calls of the worker: {fmt_calls(counts['worker_calls'])}")
    say(f"{bullet}callback_sender: {counts['sender_messages']:.1f} messages, {counts['deliveries']:.1f} POSTs "
        f"(local {counts['sender_seconds_per_message'] * 1000:.0f} ms per message, billed as "
        f"{CALLBACK_MESSAGE_S * 1000:.0f} ms); its AWS calls: {fmt_calls(counts['sender_calls'])}")
    say(f"{bullet}Step Functions: {counts['transitions']:.1f} transitions {counts['transitions_by_execution']}; "
        f"service-integration tasks over all: {dict(counts['workflow_tasks'])}")
    say(f"{bullet}DynamoDB: execution item {counts['item_bytes']:.0f} B, {counts['event_items']:.1f} event items "
        f"({counts['event_bytes']:.0f} B); {counts['wru']:.1f} WRU and {counts['rru']:.1f} RRU")
    for name, cold in init.items():
        mb = settings.memory[{"worker": "worker", "authorizer": "token_authorizer"}.get(name, "api_handler")].mb
        say(f"{bullet}cold start measured here, `{cold.code}`: {cold.wall_s:.2f} s wall, {cold.cpu_s:.2f} CPU-s; "
            f"billed as {cold.billed_s(mb):.1f} s at {mb} MB (CPU-s x {FULL_VCPU_MB}/MB, at least 1)")
    heading("Per 1,000 executions of a 30-second playbook")
    for text in table(cost_rows(report["lines"], "per 1,000 executions"), markdown, {1, 3, 4}):
        say(text)
    verdict = "PASS" if report["pass"] else "FAIL"
    say(f"\n{'**' if markdown else ''}Total {usd(report['total'])} per 1,000 executions; target <= "
        f"${TARGET_PER_1000_USD:.2f}: {verdict}{'**' if markdown else ''}")
    note = "- " if markdown else ""
    if markdown:
        say()
    say(f"{note}Every execution meeting cold functions is the upper bound; with warm functions (steady traffic): "
        f"{usd(report['warm_total'])}: {'PASS' if report['warm_pass'] else 'FAIL'}.")
    ranked = sorted(report["lines"], key=lambda line: line.usd, reverse=True)
    say(f"{note}Largest: " + "; ".join(f"{line.component.split(' (')[0]} {usd(line.usd)} "
                                f"({100 * line.usd / report['total']:.0f}%)" for line in ranked[:3]))
    say(f"{note}Each 128 MB of worker memory costs {usd(report['worker_usd_per_mb'] * 128)} per 1,000 executions; "
        f"the other rows unchanged, the target holds up to a Worker MemorySize of {report['worker_mb_limit']:.0f} MB "
        f"({report['worker_mb_limit_warm']:.0f} MB with warm functions) "
        f"(Arm would bill {usd(report['lines'][0].usd * PRICES['lambda_gb_s_arm'].usd / PRICES['lambda_gb_s'].usd)} "
        f"for the worker's duration instead of {usd(report['lines'][0].usd)}).")
    heading("Idle, per month")
    for text in table(cost_rows(report["idle"][0], "per month"), markdown, {1, 3, 4}):
        say(text)
    say()
    for rotations, total in report["idle_totals"].items():
        when = {0: "first year", 1: "after the key's first yearly rotation", 2: "after its second (and later)"}[rotations]
        ok = "PASS" if report["idle_pass"][rotations] else "FAIL"
        bold = "**" if markdown and rotations == 0 else ""
        say(f"{'- ' if markdown else ''}{bold}Idle {usd(total)} a month, {when}; target <= "
            f"${TARGET_IDLE_USD:.2f}: {ok}{bold}")
    for minutes, rows in report["fargate"].items():
        heading(f"One long run on Fargate: a {minutes}-minute playbook (its TTL does not fit in a Lambda invocation)")
        for text in table(cost_rows(rows, "per run"), markdown, {1, 3, 4}):
            say(text)
        say(f"\n{'- ' if markdown else ''}{usd(sum(line.usd for line in rows))} per run on top of what every execution "
            f"costs (workflow, tables, webhooks); the same minutes on the Lambda worker "
            f"({settings.memory['worker'].mb} MB) would be {usd(minutes * 60 * settings.memory['worker'].mb / 1024 * PRICES['lambda_gb_s'].usd)}, "
            "were Lambda allowed them. Not counted: a NAT gateway or public IPv4 address the subnets may need.")
    heading(f"Prices (us-east-1, as of {PRICES_AS_OF})")
    rows = [["price", "per", "source"]] + [[f"${p.usd:.10g}", p.unit, p.source] for p in PRICES.values()]
    for text in table(rows, markdown, {0}):
        say(text)


def fmt_calls(calls: Counter) -> str:
    return ", ".join(f"{name} {count:.3g}" for name, count in sorted(calls.items())) or "none"


def document(report: dict) -> dict:
    """The report as JSON."""
    counts = dict(report["counts"])
    for key, value in counts.items():
        if isinstance(value, Counter):
            counts[key] = dict(value)
    return {
        "pricesAsOf": PRICES_AS_OF, "region": REGION,
        "prices": {key: {"usd": price.usd, "unit": price.unit, "source": price.source} for key, price in PRICES.items()},
        "memory": {name: {"mb": memory.mb, "source": memory.source}
                   for name, memory in report["settings"].memory.items()},
        "counts": counts,
        "coldStarts": {name: {"code": cold.code, "wallSeconds": cold.wall_s, "cpuSeconds": cold.cpu_s}
                       for name, cold in report["init"].items()},
        "per1000": [{"component": line.component, "count": line.count, "unit": line.unit, "usd": line.usd}
                    for line in report["lines"]],
        "totalPer1000": report["total"], "warmTotalPer1000": report["warm_total"],
        "targetPer1000": TARGET_PER_1000_USD, "pass": report["pass"],
        "idle": [{"component": line.component, "count": line.count, "unit": line.unit, "usd": line.usd}
                 for line in report["idle"][0]],
        "idleMonthly": {str(k): v for k, v in report["idle_totals"].items()}, "targetIdle": TARGET_IDLE_USD,
        "idlePass": {str(k): v for k, v in report["idle_pass"].items()},
        "workerMemoryLimitMb": report["worker_mb_limit"], "workerMemoryLimitWarmMb": report["worker_mb_limit_warm"],
        "warmPass": report["warm_pass"],
        "fargatePerRun": {str(minutes): {"lines": [{"component": line.component, "count": line.count, "unit": line.unit,
                                                     "usd": line.usd} for line in rows],
                                         "usd": sum(line.usd for line in rows)}
                          for minutes, rows in report["fargate"].items()},
    }


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=3, help="executions started at once (default 3)")
    parser.add_argument("--pause", type=float, default=TARGET_PLAYBOOK_S,
                        help="seconds the playbook sleeps (default 30; otherwise scaled to 30)")
    parser.add_argument("--poll", type=float, default=10.0, help="the client's poll interval, s (default 10)")
    parser.add_argument("--concurrent", action="store_true",
                        help="start the executions at once (default: one after the other, each worker alone on "
                             "the CPUs as on Lambda)")
    parser.add_argument("--stage", default="dev", help="the .chalice/config.json stage (default dev)")
    parser.add_argument("--worker-memory", type=int, help="price the worker at this MemorySize instead (what-if)")
    parser.add_argument("--chalice-memory", type=int, help="price every Chalice function at this memory (what-if)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    add_standard_arguments(parser, startup_timeout=90.0)
    args = parser.parse_args(argv)
    if args.executions < 1 or args.pause < 1 or args.poll <= 0:
        parser.error("--executions and --pause must be at least 1, --poll positive")

    settings = read_settings(args.stage)
    if args.worker_memory:
        settings.memory["worker"] = FunctionMemory("Worker", args.worker_memory, "--worker-memory (what-if)")
    if args.chalice_memory:
        for name in CHALICE_LOGICAL_IDS:
            settings.memory[name] = FunctionMemory(name, args.chalice_memory, "--chalice-memory (what-if)")

    def measure() -> dict:
        init = measure_init()
        log("cold starts: " + ", ".join(f"`{cold.code}` {cold.wall_s:.2f} s ({cold.cpu_s:.2f} CPU-s)"
                                        for cold in init.values()))
        return build_report(run_executions(args), settings, init, args)

    def exit_code(report: dict) -> int:
        return 0 if report["pass"] and report["idle_pass"][0] else 1

    return run_benchmark(measure, args.json, lambda report: print_report(report, args.markdown), exit_code, document)


if __name__ == "__main__":
    sys.exit(main())
