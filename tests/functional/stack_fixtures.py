"""moto with no endpoint override, and small stacks like the ones `make deploy` creates.

The deploy program and `admin --stack` point this process's settings at a stack by setting
environment variables (as a command-line process may); the fixture puts the environment, the
settings, the clients and the models back afterwards, so no other test sees the stack.
"""
from __future__ import annotations

import os

import boto3
import pytest
import yaml
from moto import mock_aws

from chalicelib.platform import aws, models
from chalicelib.platform.config import reset_settings

REGION = "us-east-1"


def table(key: str) -> dict:
    """An on-demand table with one string hash key, as infra/template.yaml declares them."""
    return {"Type": "AWS::DynamoDB::Table",
            "Properties": {"BillingMode": "PAY_PER_REQUEST",
                           "AttributeDefinitions": [{"AttributeName": key, "AttributeType": "S"}],
                           "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}]}}


def runner_template(outputs: bool = True) -> dict:
    """The stack's parts the admin command and the bootstrap use: the users' and accounts' tables, the key."""
    template = {
        "Parameters": {"WorkerImageUri": {"Type": "String"},
                       "HeartbeatSeconds": {"Type": "Number", "Default": 60}},
        "Resources": {"UsersTable": table("username"), "AccountsTable": table("accountAlias"),
                      "SecretsKey": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": {
                          "Version": "2012-10-17", "Statement": []}}}},
    }
    if outputs:
        template["Outputs"] = {
            "UsersTableName": {"Value": {"Ref": "UsersTable"}},
            "AccountsTableName": {"Value": {"Ref": "AccountsTable"}},
            "SecretsKeyArn": {"Value": {"Fn::GetAtt": ["SecretsKey", "Arn"]}},
            "ApiUrl": {"Value": "https://abc123.execute-api.us-east-1.amazonaws.com/api/"},
        }
    return template


def create_stack(name: str, template: dict) -> dict:
    """Create a stack directly (as an earlier deploy would have); answers its Outputs."""
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(StackName=name, TemplateBody=yaml.safe_dump(template),
                                Parameters=[{"ParameterKey": "WorkerImageUri", "ParameterValue": "image:1"}])
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    return {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs") or []}


@pytest.fixture
def mocked_aws(monkeypatch: pytest.MonkeyPatch):
    """moto in-process in us-east-1; the environment, settings, clients and models restored after."""
    for name in [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL") or name == "AWS_PROFILE"]:
        monkeypatch.delenv(name)
    for name, value in {"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    saved = dict(os.environ)
    reset_settings()
    aws.reset_clients()
    models.unbind()
    with mock_aws():
        yield
    os.environ.clear()
    os.environ.update(saved)
    reset_settings()
    aws.reset_clients()
    models.unbind()
