"""The embedded AWS emulator: moto in server mode, provisioned from infra/template.yaml."""
from __future__ import annotations

import base64
import gc
import hmac
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable

import boto3
import requests

from chalicelib.platform.config import Settings, table_env_var
from localmode.atomic_items import make_items_atomic
from chalicelib.platform.template import TEMPLATE_PATH, create_table_request, load_template, resources

MOTO_ACCOUNT_ID = "123456789012"
LOCAL_PREFIX = "runner-local-"
EMULATOR_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running local-mode process.

    The emulator and the API allocate heavily per request; with the default thresholds, full
    collections put 50-100 ms stalls into p99 latencies. Objects alive after start-up are frozen
    out of collection altogether.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def free_port() -> int:
    """A TCP port nobody listens on now (on loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_access_key() -> str:
    """An access key id for one run of local mode: the emulator answers nothing signed otherwise."""
    return "LOCAL" + secrets.token_hex(10).upper()


def emulator_environment(endpoint: str, region: str, table_prefix: str, template: dict,
                         access_key: str = "local") -> dict[str, str]:
    """The environment that points boto3, PynamoDB and our settings at the emulator."""
    env = {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_SESSION_TOKEN": "local",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_ENDPOINT_URL": endpoint,
        "RUNNER_LOCAL": "1",
    }
    for logical_id in resources(template, "AWS::DynamoDB::Table"):
        env[table_env_var(logical_id)] = f"{table_prefix}{logical_id}"
    # Queues, state machines, schedule groups: the names the template's Globals give the functions.
    groups = resources(template, "AWS::Scheduler::ScheduleGroup")
    queues = resources(template, "AWS::SQS::Queue")
    for variable, logical_id in function_references(template).items():
        if logical_id in queues:
            env[variable] = f"{endpoint}/{MOTO_ACCOUNT_ID}/{queue_name(table_prefix, logical_id, queues[logical_id])}"
        elif logical_id in state_machines(template):
            env[variable] = f"arn:aws:states:{region}:{MOTO_ACCOUNT_ID}:stateMachine:{table_prefix}{logical_id}"
        elif logical_id in groups:
            env[variable] = f"{table_prefix}{logical_id}"  # on AWS, a name CloudFormation generates
    for variable, logical_id in function_arn_attributes(template).items():
        if logical_id in resources(template, "AWS::IAM::Role"):
            env[variable] = f"arn:aws:iam::{MOTO_ACCOUNT_ID}:role/{table_prefix}{logical_id}"
    # No Lambda runs here: the local scheduler calls the trigger handler itself for this target.
    env["RUNNER_TRIGGER_FUNCTION_ARN"] = f"arn:aws:lambda:{region}:{MOTO_ACCOUNT_ID}:function:{table_prefix}ScheduleTrigger"
    return env


def function_references(template: dict) -> dict[str, str]:
    """Environment variable -> logical id, for the functions' variables that are a plain Ref."""
    variables = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    return {name: value["Ref"] for name, value in variables.items()
            if isinstance(value, dict) and set(value) == {"Ref"}}


def function_arn_attributes(template: dict) -> dict[str, str]:
    """Environment variable -> logical id, for the functions' variables that are `!GetAtt X.Arn`."""
    variables = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    return {name: value["Fn::GetAtt"][0] for name, value in variables.items()
            if isinstance(value, dict) and set(value) == {"Fn::GetAtt"} and value["Fn::GetAtt"][1] == "Arn"}


def state_machines(template: dict) -> dict[str, dict]:
    """Logical id -> properties of every state machine, SAM or plain."""
    return {**resources(template, "AWS::Serverless::StateMachine"),
            **resources(template, "AWS::StepFunctions::StateMachine")}


def queue_name(prefix: str, logical_id: str, properties: dict) -> str:
    """The emulator's name of a template queue (a FIFO queue's name must end in .fifo, as CloudFormation's does)."""
    return f"{prefix}{logical_id}" + (".fifo" if properties.get("FifoQueue") else "")


def _create_queues(sqs: Any, region: str, prefix: str, template: dict) -> None:
    queues = resources(template, "AWS::SQS::Queue")
    # Dead-letter queues first: the others name them in their redrive policy.
    for logical_id in sorted(queues, key=lambda name: "RedrivePolicy" in queues[name]):
        properties = queues[logical_id]
        attributes = {key: str(properties[key]) for key in
                      ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds",
                       "FifoQueue", "ContentBasedDeduplication")
                      if key in properties}
        for key in ("FifoQueue", "ContentBasedDeduplication"):
            if key in attributes:
                attributes[key] = attributes[key].lower()
        redrive = properties.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            attributes["RedrivePolicy"] = json.dumps({
                "deadLetterTargetArn": f"arn:aws:sqs:{region}:{MOTO_ACCOUNT_ID}:{queue_name(prefix, target, queues[target])}",
                "maxReceiveCount": str(redrive["maxReceiveCount"])})
        sqs.create_queue(QueueName=queue_name(prefix, logical_id, properties), Attributes=attributes)


def _create_state_machines(sfn: Any, prefix: str, template: dict) -> None:
    for logical_id, properties in state_machines(template).items():
        definition = (TEMPLATE_PATH.parent / properties["DefinitionUri"]).read_text(encoding="utf-8")
        sfn.create_state_machine(name=f"{prefix}{logical_id}", definition=definition,
                                 roleArn=f"arn:aws:iam::{MOTO_ACCOUNT_ID}:role/runner-local-states",
                                 type=properties.get("Type", "STANDARD"))


@dataclass
class EmulatorState:
    """What of the emulator must survive a restart beyond the tables: the KMS key's material.

    The token signing key is an item of the accounts table, sealed by that key, so it survives
    with the tables (a "signingKey" of an older snapshot is ignored).
    """

    kms_key_id: str
    kms_key_material: bytes

    def to_json(self) -> dict:
        return {"kmsKeyId": self.kms_key_id,
                "kmsKeyMaterial": base64.b64encode(self.kms_key_material).decode("ascii")}

    @classmethod
    def from_json(cls, data: dict) -> "EmulatorState":
        return cls(data["kmsKeyId"], base64.b64decode(data["kmsKeyMaterial"]))


class EmulatorProcess:
    """The emulator in a child process of its own (so the API and the emulator use two cores)."""

    def __init__(self, port: int | None = None, region: str = "us-east-1") -> None:
        self.port = port or free_port()
        self.region = region
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None
        self._access_key = "local"

    def start(self, environment: dict[str, str], state: EmulatorState | None) -> EmulatorState:
        """Start the emulator, create the template's resources in it; answer its state."""
        self._access_key = environment["AWS_ACCESS_KEY_ID"]
        # A session of its own: the terminal's Ctrl-C reaches only us, and we stop the emulator
        # after saving its tables.
        self._process = subprocess.Popen(
            [sys.executable, "-m", "localmode.emulator_process"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
            env={**os.environ, **environment},
        )
        request = {"port": self.port, "region": self.region, "state": state.to_json() if state else None}
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait(timeout=10)
            raise RuntimeError(f"the AWS emulator failed to start (exit code {code})")
        return EmulatorState.from_json(json.loads(line))

    def stop(self) -> None:
        """Stop the emulator process."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def client(self, service: str) -> Any:
        """A boto3 client of the emulator, with the credentials it was started with."""
        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint,
                            aws_access_key_id=self._access_key, aws_secret_access_key="local",
                            aws_session_token="local")


class CredentialGate:
    """WSGI middleware: 403 for any request not signed with local mode's access key id.

    moto checks no credentials, and local mode's sandboxed workers share the machine's loopback
    with the playbooks they run. The key id is local mode's secret (a new one each start): the
    workers hold it, their playbooks never see it, so a playbook that finds the emulator's port
    still reads nothing (on AWS, IAM is this boundary).
    """

    CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")

    def __init__(self, app: Callable, access_key: str) -> None:
        self._app = app
        self._access_key = access_key

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        signed = self.CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        if signed and hmac.compare_digest(signed.group(1), self._access_key):
            return self._app(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "application/json")])
        return [b'{"__type": "AccessDeniedException", "message": "not signed with local mode\'s credentials"}']


def close_to_strangers(server: Any, access_key: str) -> None:
    """Let only requests signed with `access_key` through, moto's own included."""
    import moto.stepfunctions.parser.asl.utils.boto_client as sfn_clients

    # moto's Step Functions calls the other services over HTTP with fixed made-up credentials.
    made_up = sfn_clients.boto3.client

    def with_local_credentials(*args: Any, **kwargs: Any) -> Any:
        if "aws_access_key_id" in kwargs:
            kwargs["aws_access_key_id"] = access_key
        return made_up(*args, **kwargs)

    sfn_clients.boto3 = types.SimpleNamespace(client=with_local_credentials)
    server._server.app = CredentialGate(server._server.app, access_key)


def serve_emulator(port: int, region: str, state: EmulatorState | None) -> tuple[Any, EmulatorState]:
    """In this process: moto's server on loopback, configured and provisioned from the template."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    from chalicelib.platform.config import Settings

    os.environ["MOTO_PORT"] = str(port)
    make_items_atomic()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    requests.post(f"{endpoint}/moto-api/config", json=EMULATOR_CONFIG, timeout=10).raise_for_status()
    close_to_strangers(server, os.environ["AWS_ACCESS_KEY_ID"])

    def client(service: str) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=endpoint)

    return server, provision(client, region, load_template(), Settings.from_environ(), state)


def provision(client: Callable[[str], Any], region: str, template: dict, settings: Settings,
              state: EmulatorState | None, prefix: str = LOCAL_PREFIX) -> EmulatorState:
    """Create the template's tables, queues, state machines, schedule groups and KMS key in moto."""
    dynamodb = client("dynamodb")
    for logical_id, properties in resources(template, "AWS::DynamoDB::Table").items():
        dynamodb.create_table(**create_table_request(properties, settings.table(logical_id)))
        ttl = properties.get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(TableName=settings.table(logical_id), TimeToLiveSpecification=ttl)
    _create_queues(client("sqs"), region, prefix, template)
    _create_state_machines(client("stepfunctions"), prefix, template)
    scheduler = client("scheduler")
    for logical_id in resources(template, "AWS::Scheduler::ScheduleGroup"):
        scheduler.create_schedule_group(Name=f"{prefix}{logical_id}")
    kms_key_id = _create_key(client("kms"), region, template, state, prefix)
    return EmulatorState(kms_key_id, _backend_key(region, kms_key_id).key_material)


def _create_key(kms: Any, region: str, template: dict, state: EmulatorState | None, prefix: str) -> str:
    keys = resources(template, "AWS::KMS::Key")
    if len(keys) != 1:
        raise RuntimeError(f"infra/template.yaml must declare one KMS key, found {len(keys)}")
    logical_id, properties = next(iter(keys.items()))
    key_id = kms.create_key(Description=properties.get("Description", ""))["KeyMetadata"]["KeyId"]
    if state is not None:
        key_id = _restore_key(region, key_id, state)
    for alias_id, alias in resources(template, "AWS::KMS::Alias").items():
        if alias.get("TargetKeyId") == {"Ref": logical_id}:  # on AWS: alias/<stack name>
            kms.create_alias(AliasName=f"alias/{prefix}{alias_id}", TargetKeyId=key_id)
    return key_id


def _backend_key(region: str, key_id: str) -> Any:
    from moto.kms.models import kms_backends

    return kms_backends[MOTO_ACCOUNT_ID][region].keys[key_id]


def _restore_key(region: str, new_key_id: str, state: EmulatorState) -> str:
    # moto cannot import key material, so the emulator's key is given back its old id and
    # material directly: ciphertexts stored before the restart must still decrypt.
    from moto.kms.models import kms_backends

    backend = kms_backends[MOTO_ACCOUNT_ID][region]
    key = backend.keys.pop(new_key_id)
    key.id = state.kms_key_id
    key.arn = key.arn.replace(new_key_id, state.kms_key_id)
    key.key_material = state.kms_key_material
    backend.keys[state.kms_key_id] = key
    return state.kms_key_id
