"""A deployed stack's tables and KMS key, as the settings' environment variables.

The functions inside the stack get these names from the environment the template sets on them.
A program outside it (the admin command with `--stack`, the deploy program's bootstrap) learns
them from CloudFormation instead: from the stack's Outputs (`<LogicalId>Name` for each table,
`SecretsKeyArn`), and, for whatever the Outputs leave out, from the stack's resources, so that a
stack deployed from a template with fewer Outputs still works.
Nothing here lists the tables: whatever tables the stack has are named.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.platform.config import reset_settings, table_env_var
from chalicelib.platform.errors import NotFound

TABLE_OUTPUT_SUFFIX = "TableName"
KEY_OUTPUT = "SecretsKeyArn"
# The API's URL: our template's Output, else the one Chalice's generated template always has.
API_URL_OUTPUTS = ("ApiUrl", "EndpointURL")
# The resource each single-valued variable falls back to when its Output is missing.
_SINGLE = {"RUNNER_KMS_KEY_ID": (KEY_OUTPUT, "AWS::KMS::Key")}


@dataclass(frozen=True)
class DeployedStack:
    """One stack as CloudFormation describes it."""

    name: str
    outputs: dict[str, str]
    environment: dict[str, str]

    @property
    def api_url(self) -> str | None:
        """The API's base URL without its trailing slash (paths are appended to it)."""
        url = next((self.outputs[key] for key in API_URL_OUTPUTS if self.outputs.get(key)), None)
        return url.rstrip("/") if url else None


def _resources(cloudformation: Any, stack_name: str) -> list[dict]:
    found: list[dict] = []
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name):
        found.extend(page["StackResourceSummaries"])
    return found


def read_stack(cloudformation: Any, stack_name: str) -> DeployedStack:
    """The stack's Outputs and the environment that points the settings at its tables and key."""
    try:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ValidationError":
            region = cloudformation.meta.region_name
            raise NotFound(f"stack {stack_name} does not exist in {region}") from exc
        raise
    outputs = {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs") or []}
    environment = {table_env_var(key.removesuffix("Name")): value for key, value in outputs.items()
                   if key.endswith(TABLE_OUTPUT_SUFFIX)}
    for variable, (output, _) in _SINGLE.items():
        if output in outputs:
            environment[variable] = outputs[output]
    if not {table_env_var("UsersTable"), *_SINGLE} <= set(environment):
        _fill_from_resources(environment, _resources(cloudformation, stack_name))
    environment["RUNNER_STACK_NAME"] = stack_name
    environment["AWS_REGION"] = cloudformation.meta.region_name
    return DeployedStack(stack_name, outputs, environment)


def _fill_from_resources(environment: dict[str, str], resources: list[dict]) -> None:
    for resource in resources:
        if resource["ResourceType"] == "AWS::DynamoDB::Table" and resource.get("PhysicalResourceId"):
            environment.setdefault(table_env_var(resource["LogicalResourceId"]), resource["PhysicalResourceId"])
    for variable, (_, resource_type) in _SINGLE.items():
        matches = [r["PhysicalResourceId"] for r in resources
                   if r["ResourceType"] == resource_type and r.get("PhysicalResourceId")]
        if len(matches) == 1:
            environment.setdefault(variable, matches[0])


def use_stack(stack: DeployedStack) -> None:
    """Point this process's settings at the stack (a command-line process only).

    The models rebind on their next use, since the settings they were bound to differ; the
    clients are cached per region, and the stack's region is in its environment.
    """
    os.environ.update(stack.environment)
    reset_settings()
