"""`python -m chalicelib.admin --stack NAME ...` works on the tables of the stack it names."""
from __future__ import annotations

import io

import boto3

from chalicelib import admin
from chalicelib.platform.deployed_stack import read_stack
from tests.functional.stack_fixtures import REGION, create_stack, mocked_aws, runner_template  # noqa: F401


def _item(table_name: str, key: dict) -> dict | None:
    return boto3.client("dynamodb", region_name=REGION).get_item(TableName=table_name, Key=key).get("Item")


def test_admin_creates_the_account_and_user_in_the_stacks_own_tables(mocked_aws, monkeypatch, capsys):
    outputs = create_stack("runner-prod", runner_template())
    assert outputs["UsersTableName"].startswith("runner-prod-UsersTable")  # not the default names
    stack = read_stack(boto3.client("cloudformation", region_name=REGION), "runner-prod")
    assert stack.api_url == "https://abc123.execute-api.us-east-1.amazonaws.com/api"
    assert stack.environment["RUNNER_USERS_TABLE"] == outputs["UsersTableName"]

    assert admin.main(["--stack", "runner-prod", "create-account", "ACME"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert admin.main(["--stack", "runner-prod", "create-user", "--account", "ACME",
                       "--username", "ops@acme", "--password-stdin"]) == 0

    assert _item(outputs["AccountsTableName"], {"accountAlias": {"S": "ACME"}})
    stored = _item(outputs["UsersTableName"], {"username": {"S": "ops@acme"}})
    assert stored["accountAlias"] == {"S": "ACME"}
    assert "a-long-password" not in capsys.readouterr().out


def test_a_stack_without_outputs_is_read_through_its_resources(mocked_aws):
    create_stack("older", runner_template(outputs=False))
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    physical = {resource["LogicalResourceId"]: resource["PhysicalResourceId"] for resource in
                cloudformation.describe_stack_resources(StackName="older")["StackResources"]
                if resource.get("LogicalResourceId")}

    environment = read_stack(cloudformation, "older").environment

    assert environment["RUNNER_USERS_TABLE"] == physical["UsersTable"]
    assert environment["RUNNER_ACCOUNTS_TABLE"] == physical["AccountsTable"]
    assert environment["RUNNER_KMS_KEY_ID"] == physical["SecretsKey"]
    assert environment["AWS_REGION"] == REGION


def test_admin_names_a_missing_stack_in_one_line(mocked_aws, capsys):
    assert admin.main(["--stack", "nowhere", "create-account", "ACME"]) == 1
    assert capsys.readouterr().err == f"error: stack nowhere does not exist in {REGION}\n"
