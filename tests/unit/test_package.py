"""`make package`: dist/ is a complete, deployable stack (checked offline, as far as no AWS account allows).

The packaged template is linted (cfn-lint), translated (aws-sam-translator, as CloudFormation's
SAM transform would), and its stateful resources are created through moto's CloudFormation.
"""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml
from chalice.config import Config
from moto import mock_aws
from moto.cloudformation.parsing import get_model_map

from chalicelib.platform.template import load_template
from stack.package import ROOT, scope_policies, package

TABLE = "AWS::DynamoDB::Table"
NAME_PROPERTIES = ("TableName", "QueueName", "Name", "AliasName", "RoleName", "FunctionName",
                   "StateMachineName", "BucketName", "LogGroupName")
DATA_TYPES = (TABLE, "AWS::KMS::Key")
CHALICE_FUNCTIONS = {"APIHandler": "api_handler", "TokenAuthorizer": "token_authorizer",
                     "ScheduleTrigger": "schedule_trigger", "ScheduleReconciler": "schedule_reconciler",
                     "CallbackSender": "callback_sender"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    return package(tmp_path_factory.mktemp("dist") / "dist").parent


@pytest.fixture(scope="module")
def packaged(dist) -> dict:
    return load_template(dist / "template.yaml")


def resources_of(template: dict, kind: str) -> dict[str, dict]:
    return {name: value for name, value in template["Resources"].items() if value["Type"] == kind}


def local_references(template: dict) -> list[str]:
    found = []
    for value in template["Resources"].values():
        for key in ("CodeUri", "DefinitionUri", "ContentUri"):
            uri = value.get("Properties", {}).get(key)
            if isinstance(uri, str) and "://" not in uri:
                found.append(uri)
    return found


def test_every_reference_resolves_inside_dist(dist, packaged):
    references = local_references(packaged)
    assert "./deployment.zip" in references and "statemachines/execution.asl.json" in references
    for reference in references:
        assert (dist / reference).is_file(), f"{reference} does not resolve inside dist/"


def test_the_packaged_template_passes_cfn_lint(dist):
    lint = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), str(dist / "template.yaml")],
                          capture_output=True, text=True)
    errors = [line for line in lint.stdout.splitlines() if re.match(r"^E\d", line)]
    assert lint.returncode in (0, 4, 8, 12) and not errors, lint.stdout + lint.stderr  # 4/8: warnings/info


def translate(dist: Path, packaged: dict) -> dict:
    """The template as CloudFormation's SAM transform sees it after `cloudformation package`."""
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    sam = copy.deepcopy(packaged)
    for value in sam["Resources"].values():
        props = value.get("Properties", {})
        if props.get("CodeUri") == "./deployment.zip":
            props["CodeUri"] = "s3://artifacts/deployment.zip"
        if isinstance(props.get("DefinitionUri"), str):
            props["Definition"] = json.loads((dist / props.pop("DefinitionUri")).read_text())
    parameters = {name: spec.get("Default", "123456789012.dkr.ecr.us-east-1.amazonaws.com/w:1")
                  for name, spec in sam["Parameters"].items()}
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name="us-east-1"))
    return translator.translate(sam, parameter_values=parameters, get_managed_policy_map=lambda: {})


def test_sam_translates_it_and_no_role_gets_a_managed_policy(dist, packaged):
    translated = translate(dist, packaged)
    roles = resources_of(translated, "AWS::IAM::Role")
    assert len(roles) >= len(CHALICE_FUNCTIONS) + 3  # the functions, the worker, two state machines, Scheduler's
    for name, role in roles.items():
        assert not role["Properties"].get("ManagedPolicyArns"), f"{name} has a managed policy"


def test_the_worker_mapping_reports_partial_failures_and_bounds_concurrency(dist, packaged):
    mappings = [value["Properties"] for value in resources_of(translate(dist, packaged),
                                                               "AWS::Lambda::EventSourceMapping").values()]
    worker = [m for m in mappings if m["FunctionName"] == {"Ref": "Worker"}]
    assert len(worker) == 1
    assert worker[0]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert worker[0]["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "WorkerMaximumConcurrency"}}
    assert all(m.get("FunctionResponseTypes") == ["ReportBatchItemFailures"] for m in mappings)


@pytest.mark.parametrize("function, parameter", [("Worker", "WorkerReservedConcurrency"),
                                                 ("RunHandoff", "HandoffReservedConcurrency")])
def test_no_concurrency_is_reserved_unless_asked(packaged, function, parameter):
    reserved = packaged["Resources"][function]["Properties"]["ReservedConcurrentExecutions"]
    condition, _, otherwise = reserved["Fn::If"]
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert packaged["Parameters"][parameter]["Default"] == ""
    assert packaged["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}
    unconditional = [name for name, value in resources_of(packaged, "AWS::Serverless::Function").items()
                     if isinstance(value["Properties"].get("ReservedConcurrentExecutions"), int)]
    assert not unconditional, f"{unconditional} reserve concurrency on every account"


def test_every_function_has_at_least_256_mb(packaged):
    functions = resources_of(packaged, "AWS::Serverless::Function")
    assert set(CHALICE_FUNCTIONS) | {"Worker"} <= set(functions)
    for name, value in functions.items():
        assert value["Properties"].get("MemorySize", 128) >= 256, f"{name} has less than 256 MB"


def test_names_derive_from_the_stack(packaged):
    for name, value in packaged["Resources"].items():
        for key in NAME_PROPERTIES:
            given = value.get("Properties", {}).get(key)
            # A literal is the same in every stack; what derives from the stack is an intrinsic.
            assert not isinstance(given, str), f"{name}.{key} is fixed: {given}"


# What the run slots table holds lives no longer than the workflows it names, which end with the stack.
EPHEMERAL = {"SlotsTable"}


def test_data_outlives_the_stack(packaged):
    for kind in DATA_TYPES:
        for name, value in resources_of(packaged, kind).items():
            if name in EPHEMERAL:
                assert "DeletionPolicy" not in value, name
                continue
            assert value.get("DeletionPolicy") == "Retain" and value.get("UpdateReplacePolicy") == "Retain", name


def test_outputs_name_the_api_and_every_table(packaged):
    outputs = packaged["Outputs"]
    assert "${RestAPI}" in outputs["ApiUrl"]["Value"]["Fn::Sub"]
    for name in resources_of(packaged, TABLE):
        assert outputs[f"{name}Name"]["Value"] == {"Ref": name}
    assert outputs["SecretsKeyArn"]["Value"] == {"Fn::GetAtt": ["SecretsKey", "Arn"]}
    # The token signing key is an item of the accounts table: no secret, no output of its own.
    assert not resources_of(packaged, "AWS::SecretsManager::Secret") and "TokenSigningSecretArn" not in outputs


def test_gateway_answers_in_the_api_shape_and_echo_nothing(packaged):
    responses = packaged["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    assert {"DEFAULT_4XX", "DEFAULT_5XX", "UNAUTHORIZED", "MISSING_AUTHENTICATION_TOKEN"} <= set(responses)
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"] == "404"  # an unknown route
    for name, response in responses.items():
        body = response["ResponseTemplates"]["application/json"]
        # Only the response type may be interpolated: messageString quotes the Authorization header.
        variables = set(re.findall(r"\$[\w.]+", body))
        assert variables <= {"$context.error.responseType"}, f"{name} interpolates {variables}"
        rendered = json.loads(body.replace("$context.error.responseType", "BAD_REQUEST_BODY"))
        assert set(rendered) == {"code", "message"}, name
        assert response["ResponseParameters"]["Headers"]["Content-Type"] == "'application/json'"


def test_api_gateway_caches_no_authorizer_answer(packaged):
    """A token must stop working the moment its user is deleted or changed: no cached Allow."""
    body = packaged["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    authorizers = {name: scheme["x-amazon-apigateway-authorizer"]
                   for name, scheme in body["securityDefinitions"].items() if "x-amazon-apigateway-authorizer" in scheme}
    assert authorizers and all(config["authorizerResultTtlInSeconds"] == 0 for config in authorizers.values())


def test_each_chalice_function_runs_with_exactly_its_policy_file(packaged):
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    for logical_id, function in CHALICE_FUNCTIONS.items():
        props = packaged["Resources"][logical_id]["Properties"]
        role = packaged["Resources"][props["Role"]["Fn::GetAtt"][0]]["Properties"]
        policy_file = Config(chalice_stage="dev", function_name=function, config_from_disk=config).iam_policy_file
        expected = {"Resources": {"Role": {"Type": "AWS::IAM::Role", "Properties": {"Policies": [
            {"PolicyName": "p", "PolicyDocument": json.loads((ROOT / ".chalice" / policy_file).read_text())}]}}}}
        scope_policies(expected)
        assert [p["PolicyDocument"] for p in role["Policies"]] == \
            [expected["Resources"]["Role"]["Properties"]["Policies"][0]["PolicyDocument"]], logical_id
        assert not role.get("ManagedPolicyArns"), logical_id


@pytest.mark.parametrize("stage", ["dev", "prod", "any-other"])
def test_one_policy_for_every_stage(stage):
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    for function in CHALICE_FUNCTIONS.values():
        scoped = Config(chalice_stage=stage, function_name=function, config_from_disk=config)
        assert scoped.autogen_policy is False and scoped.iam_policy_file == f"policy-{function.replace('_', '-')}.json"
        assert scoped.lambda_memory_size >= 256


def test_the_sqs_consumers_are_bound_to_the_stack_queues(packaged):
    for logical_id in CHALICE_FUNCTIONS:
        for event in packaged["Resources"][logical_id]["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                queue = event["Properties"]["Queue"]["Fn::GetAtt"]
                assert packaged["Resources"][queue[0]]["Type"] == "AWS::SQS::Queue" and queue[1] == "Arn"


def stateful_part(template: dict) -> dict:
    """The template's data and queues, in the resource types moto's CloudFormation creates."""
    supported = set(get_model_map())
    kinds = {TABLE, "AWS::SQS::Queue", "AWS::KMS::Key", "AWS::KMS::Alias"} & supported
    kept = {name: value for name, value in template["Resources"].items() if value["Type"] in kinds}
    for name, value in kept.items():
        # CloudFormation names a FIFO queue <stack>-<LogicalId>-<random>.fifo; moto's leaves the
        # suffix out, which SQS then refuses. Name it as CloudFormation would.
        if value["Type"] == "AWS::SQS::Queue" and value["Properties"].get("FifoQueue"):
            value["Properties"] = {**value["Properties"], "QueueName": {"Fn::Sub": f"${{AWS::StackName}}-{name}.fifo"}}
    outputs = {name: value for name, value in template["Outputs"].items()
               if isinstance(value["Value"], dict) and value["Value"].get("Ref") in kept}
    return {"AWSTemplateFormatVersion": "2010-09-09", "Resources": kept, "Outputs": outputs}


def test_the_stateful_resources_deploy_through_cloudformation(packaged):
    part = stateful_part(packaged)
    assert len(resources_of(part, TABLE)) == len(resources_of(packaged, TABLE))
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name="us-east-1")
        cloudformation.create_stack(StackName="runner-a", TemplateBody=yaml.safe_dump(part))
        cloudformation.create_stack(StackName="runner-b", TemplateBody=yaml.safe_dump(part))  # side by side
        stacks = {name: cloudformation.describe_stacks(StackName=name)["Stacks"][0] for name in ("runner-a", "runner-b")}
        assert {stack["StackStatus"] for stack in stacks.values()} == {"CREATE_COMPLETE"}
        outputs = {name: {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]} for name, stack in stacks.items()}
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        for logical_id, value in resources_of(part, TABLE).items():
            tables = {outputs[name][f"{logical_id}Name"] for name in stacks}
            assert len(tables) == 2, f"two stacks share {logical_id}'s name"
            for table in tables:
                described = dynamodb.describe_table(TableName=table)["Table"]
                assert described["KeySchema"] == value["Properties"]["KeySchema"]
        queues = boto3.client("sqs", region_name="us-east-1").list_queues()["QueueUrls"]
        assert len(queues) == 2 * len(resources_of(part, "AWS::SQS::Queue"))
