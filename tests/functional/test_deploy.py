"""`make deploy`'s program against moto: artefacts, ECR, the stack, the first account, no Docker.

moto's CloudFormation cannot fail a stack the way CloudFormation does (its execution has no
failure path), so the failure test teaches it: its execution of the change set records what
CloudFormation records when a resource fails to create (the resource's CREATE_FAILED event with
the reason, the cancelled ones, the rollback) and ends ROLLBACK_COMPLETE.
"""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest
import yaml
from moto.cloudformation import models as moto_cloudformation

from chalicelib.auth import users
from chalicelib.platform.models import SIGNING_KEY_ITEM, SigningKeyItem, User
from deploy import DeployError, artifacts, image
from deploy.__main__ import main
from deploy.stack import deploy_stack
from tests.functional.stack_fixtures import REGION, mocked_aws, runner_template  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_ID = "123456789012"  # moto's
IMAGE = f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/runner-test-worker:0123abcd"


def _store() -> artifacts.ArtifactStore:
    s3 = boto3.client("s3", region_name=REGION)
    artifacts.ensure_bucket(s3, "runner-test-artifacts", ACCOUNT_ID, REGION)
    return artifacts.ArtifactStore(s3, "runner-test-artifacts", ACCOUNT_ID)


def _object(store: artifacts.ArtifactStore, key: str) -> bytes:
    return store.s3.get_object(Bucket=store.bucket, Key=key)["Body"].read()


def _key(s3_uri: str) -> str:
    return s3_uri.split("/", 3)[3]


def _dist(tmp_path: Path) -> tuple[Path, dict]:
    """What `make package` writes, in small: a zip, a state machine, a layer directory, a nested stack."""
    dist = tmp_path / "dist"
    (dist / "statemachines").mkdir(parents=True)
    (dist / "deployment.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    (dist / "statemachines" / "execution.asl.json").write_text('{"StartAt": "Done"}')
    (dist / "layer" / "python").mkdir(parents=True)
    (dist / "layer" / "python" / "module.py").write_text("VALUE = 1\n")
    (dist / "nested" / "code").mkdir(parents=True)
    (dist / "nested" / "code" / "handler.py").write_text("def handler(event, context): pass\n")
    (dist / "nested" / "child.yaml").write_text(yaml.safe_dump({"Resources": {"Child": {
        "Type": "AWS::Serverless::Function", "Properties": {"CodeUri": "code", "Handler": "handler.handler"}}}}))
    template = {"Transform": "AWS::Serverless-2016-10-31", "Resources": {
        "APIHandler": {"Type": "AWS::Serverless::Function", "Properties": {"CodeUri": "./deployment.zip"}},
        "Worker": {"Type": "AWS::Serverless::Function",
                   "Properties": {"PackageType": "Image", "ImageUri": {"Ref": "WorkerImageUri"}}},
        "Elsewhere": {"Type": "AWS::Serverless::Function", "Properties": {"CodeUri": "s3://other/code.zip"}},
        "ExecutionStateMachine": {"Type": "AWS::Serverless::StateMachine",
                                  "Properties": {"DefinitionUri": "statemachines/execution.asl.json"}},
        "Layer": {"Type": "AWS::Lambda::LayerVersion", "Properties": {"Content": "layer"}},
        "Nested": {"Type": "AWS::CloudFormation::Stack", "Properties": {"TemplateURL": "nested/child.yaml"}},
    }}
    return dist, template


def test_local_references_are_uploaded_and_rewritten_to_s3(mocked_aws, tmp_path):
    dist, template = _dist(tmp_path)
    original = json.loads(json.dumps(template))
    store = _store()

    packaged = artifacts.package_template(template, dist, store)

    assert template == original  # the input is left as it was
    resources = packaged["Resources"]
    api_code = resources["APIHandler"]["Properties"]["CodeUri"]
    assert api_code.startswith("s3://runner-test-artifacts/")
    assert _object(store, _key(api_code)) == (dist / "deployment.zip").read_bytes()
    assert resources["Worker"] == template["Resources"]["Worker"]
    assert resources["Elsewhere"] == template["Resources"]["Elsewhere"]
    definition = resources["ExecutionStateMachine"]["Properties"]["DefinitionUri"]
    assert definition["Bucket"] == "runner-test-artifacts"
    assert _object(store, definition["Key"]) == b'{"StartAt": "Done"}'
    layer = resources["Layer"]["Properties"]["Content"]
    with zipfile.ZipFile(io.BytesIO(_object(store, layer["S3Key"]))) as archive:
        assert archive.namelist() == ["python/module.py"]
    nested_url = resources["Nested"]["Properties"]["TemplateURL"]
    assert nested_url.startswith(f"{store.s3.meta.endpoint_url}/runner-test-artifacts/")
    child = yaml.safe_load(_object(store, nested_url.split("/runner-test-artifacts/", 1)[1]))
    child_code = child["Resources"]["Child"]["Properties"]["CodeUri"]
    with zipfile.ZipFile(io.BytesIO(_object(store, _key(child_code)))) as archive:
        assert archive.namelist() == ["handler.py"]

    stored = store.s3.list_objects_v2(Bucket=store.bucket)["KeyCount"]
    assert artifacts.package_template(template, dist, store) == packaged  # same content, same keys
    assert store.s3.list_objects_v2(Bucket=store.bucket)["KeyCount"] == stored


def test_a_reference_to_a_missing_file_is_named(mocked_aws, tmp_path):
    template = {"Resources": {"APIHandler": {"Type": "AWS::Serverless::Function",
                                             "Properties": {"CodeUri": "./deployment.zip"}}}}
    with pytest.raises(DeployError, match=r"APIHandler\.CodeUri names ./deployment.zip, which does not exist"):
        artifacts.package_template(template, tmp_path, _store())


def test_the_artifact_bucket_is_made_once_private_named_within_s3s_rules_and_holds_large_templates(mocked_aws):
    s3 = boto3.client("s3", region_name=REGION)
    for _ in range(2):
        artifacts.ensure_bucket(s3, "runner-test-artifacts", ACCOUNT_ID, REGION)
    assert [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]] == ["runner-test-artifacts"]
    blocked = s3.get_public_access_block(Bucket="runner-test-artifacts")["PublicAccessBlockConfiguration"]
    assert all(blocked.values())

    store = artifacts.ArtifactStore(s3, "runner-test-artifacts", ACCOUNT_ID)
    assert artifacts.template_source("small", store) == {"TemplateBody": "small"}
    large = "x" * (artifacts.TEMPLATE_BODY_LIMIT + 1)
    url = artifacts.template_source(large, store)["TemplateURL"]
    assert s3.get_object(Bucket=store.bucket, Key=url.split("/runner-test-artifacts/")[1])["Body"].read() == large.encode()

    long_name = artifacts.bucket_name("Runner-" + "x" * 120, ACCOUNT_ID, "ap-southeast-2")
    assert len(long_name) <= 63 and long_name == long_name.lower()
    assert long_name.endswith(f"-artifacts-{ACCOUNT_ID}-ap-southeast-2")
    assert artifacts.bucket_name("Runner", ACCOUNT_ID, REGION) == f"runner-artifacts-{ACCOUNT_ID}-{REGION}"


def test_the_worker_repository_is_created_once_and_a_present_image_is_not_pushed_again(mocked_aws):
    ecr = boto3.client("ecr", region_name=REGION)
    first = image.ensure_repository(ecr, image.repository_name("Runner-Test"))
    second = image.ensure_repository(ecr, image.repository_name("Runner-Test"))

    assert first == second == f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/runner-test-worker"
    assert [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]] == ["runner-test-worker"]
    assert json.loads(ecr.get_lifecycle_policy(repositoryName="runner-test-worker")["lifecyclePolicyText"])

    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"digest": "sha256:" + "1" * 64, "size": 1}, "layers": []})
    ecr.put_image(repositoryName="runner-test-worker", imageManifest=manifest, imageTag="abcdef")
    # Present already: no docker command is run (there is none named "no-docker").
    assert image.push("no-docker", ecr, "sha256:abcdef", "runner-test-worker", first) == f"{first}:abcdef"


def _through_s3(template: dict) -> dict:
    """The template through the bucket, as a template too large to be sent inline goes."""
    store = _store()
    return {"TemplateURL": store.url(store.put(yaml.safe_dump(template).encode(), ".yaml"))}


def test_a_stack_is_created_then_unchanged_then_updated(mocked_aws, capsys):
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    template = runner_template()
    source = _through_s3(template)

    assert deploy_stack(cloudformation, "runner-test", source, template, {"WorkerImageUri": IMAGE}) == "created"
    assert deploy_stack(cloudformation, "runner-test", source, template, {"WorkerImageUri": IMAGE}) == "unchanged"
    assert deploy_stack(cloudformation, "runner-test", source, template,
                        {"WorkerImageUri": IMAGE, "HeartbeatSeconds": "30"}) == "updated"

    stack = cloudformation.describe_stacks(StackName="runner-test")["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    assert "CREATE_COMPLETE" in capsys.readouterr().out  # the events, as they came


def _fail_creation(self, change_set_name: str, stack_name: str | None = None) -> None:
    """What CloudFormation records when a resource fails to create, in moto's backend."""
    change_set = self.describe_change_set(change_set_name)
    stack = self.stacks[change_set.stack_id]

    def event(logical_id: str, resource_type: str, status: str, reason: str) -> None:
        stack.events.append(moto_cloudformation.Event(stack.stack_id, stack.name, logical_id, "", resource_type,
                                                      status, reason, None))

    stack._add_stack_event("CREATE_IN_PROGRESS", resource_status_reason="User Initiated")
    event("SecretsKey", "AWS::KMS::Key", "CREATE_FAILED",
          "Resource handler returned message: \"User is not authorized to perform: kms:CreateKey\"")
    event("UsersTable", "AWS::DynamoDB::Table", "CREATE_FAILED", "Resource creation cancelled")
    stack._add_stack_event("ROLLBACK_IN_PROGRESS", "The following resource(s) failed to create: [SecretsKey, UsersTable].")
    stack._add_stack_event("ROLLBACK_COMPLETE")
    stack.status = "ROLLBACK_COMPLETE"


def test_a_failed_stack_prints_why_and_exits_non_zero_and_the_next_deploy_starts_over(
        mocked_aws, monkeypatch, tmp_path, capsys):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "template.yaml").write_text(yaml.safe_dump(runner_template()))
    original = moto_cloudformation.CloudFormationBackend.execute_change_set
    monkeypatch.setattr(moto_cloudformation.CloudFormationBackend, "execute_change_set", _fail_creation)

    assert main(["--stack", "runner-test", "--no-package", "--dist", str(dist), "--state-dir", str(tmp_path),
                 "--parameter", f"WorkerImageUri={IMAGE}"]) == 1

    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        'SecretsKey (AWS::KMS::Key) CREATE_FAILED: Resource handler returned message: '
        '"User is not authorized to perform: kms:CreateKey"',
        "deploy: stack runner-test ended ROLLBACK_COMPLETE; the resources that failed and why are above"]
    assert not (tmp_path / "runner-test.json").exists()

    # A stack whose first creation failed can only be deleted: the next deploy does it, then creates.
    monkeypatch.setattr(moto_cloudformation.CloudFormationBackend, "execute_change_set", original)
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    source = _through_s3(runner_template())
    assert deploy_stack(cloudformation, "runner-test", source, runner_template(), {"WorkerImageUri": IMAGE}) == "created"
    assert "deleting it to create it again" in capsys.readouterr().out


def _admins() -> list[str]:
    return [user.username for user in User.scan()]


def test_deploy_makes_the_first_admin_once_and_never_resets_its_password(mocked_aws, tmp_path, capsys):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "api.json").write_text('{"openapi": "3.0.1"}')
    template = runner_template()
    template["Resources"]["RestAPI"] = {"Type": "AWS::ApiGateway::RestApi",
                                        "Properties": {"Name": "runner", "BodyS3Location": "api.json"}}
    (dist / "template.yaml").write_text(yaml.safe_dump(template))
    state = tmp_path / "state"
    argv = ["--stack", "runner-test", "--no-package", "--dist", str(dist), "--state-dir", str(state),
            "--account", "ACME", "--parameter", f"WorkerImageUri={IMAGE}"]

    assert main(argv) == 0
    first = capsys.readouterr().out
    credentials = state / "runner-test.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    saved = json.loads(credentials.read_text())
    assert {key: saved[key] for key in ("accountAlias", "username", "stackName", "region")} == {
        "accountAlias": "ACME", "username": "acme-admin", "stackName": "runner-test", "region": REGION}
    assert saved["password"] not in first
    stored_hash = User.get("acme-admin").password_hash
    assert users.verify_password(User.get("acme-admin"), saved["password"])
    assert "stack runner-test created" in first and str(credentials) in first
    sealed_key = SigningKeyItem.get(SIGNING_KEY_ITEM).sealed_key  # the token signing key, made once
    packaged = yaml.safe_load((dist / "packaged.yaml").read_text())
    assert packaged["Resources"]["RestAPI"]["Properties"]["BodyS3Location"]["Key"].startswith("artifacts/")

    assert main(argv) == 0  # again: nothing to change, no second admin, the same password
    second = capsys.readouterr().out
    assert "stack runner-test unchanged" in second and "user acme-admin of account ACME exists" in second
    assert _admins() == ["acme-admin"]
    assert User.get("acme-admin").password_hash == stored_hash
    assert json.loads(credentials.read_text())["password"] == saved["password"]
    assert SigningKeyItem.get(SIGNING_KEY_ITEM).sealed_key == sealed_key

    credentials.unlink()  # a deploy from a machine without the file: the user is left as it is
    assert main(argv) == 0
    third = capsys.readouterr().out
    assert "--reset" in third and not credentials.exists()
    assert User.get("acme-admin").password_hash == stored_hash


def test_without_docker_the_deploy_stops_with_one_line(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    answer = subprocess.run([sys.executable, "-m", "deploy", "--stack", "runner-test"], cwd=ROOT,
                            env={**environment, "PATH": str(empty)}, capture_output=True, text=True, timeout=60)

    assert answer.returncode == 1
    assert answer.stdout == ""
    assert answer.stderr.startswith("deploy: building the worker image needs Docker and there is no `docker` command")
    assert answer.stderr.count("\n") == 1


def test_with_docker_but_no_engine_the_deploy_says_why_in_one_line(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))

    assert main(["--stack", "runner-test"]) == 1

    assert capsys.readouterr().err == (
        "deploy: building the worker image needs a running Docker engine and `docker info` failed "
        "(Cannot connect to the Docker daemon at unix:///var/run/docker.sock.): start Docker, "
        "or deploy an image already in ECR with PARAMETERS=WorkerImageUri=<image URI>\n")


def test_make_deploy_without_a_stack_says_so_in_one_line():
    environment = {name: value for name, value in os.environ.items() if name not in ("STACK", "MAKEFLAGS")}
    answer = subprocess.run(["make", "--no-print-directory", "deploy"], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=60)

    assert answer.returncode != 0
    assert answer.stderr.count("\n") == 1 and "make deploy needs STACK=name" in answer.stderr
