"""Reads infra/template.yaml, so that local mode and tests build exactly what AWS builds."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that turns CloudFormation short-form tags into their long form."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict:
    # `!Ref` and `!Condition` have no `Fn::` in their long form; every other short form has.
    name = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path | None = None) -> dict:
    """The template as plain data, intrinsic functions in their long form."""
    with open(path or TEMPLATE_PATH, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


def resources(template: dict, resource_type: str) -> dict[str, dict]:
    """Logical id -> properties of every resource of one type."""
    return {
        logical_id: resource.get("Properties", {})
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == resource_type
    }


def create_table_request(properties: dict, table_name: str) -> dict:
    """CreateTable parameters for an AWS::DynamoDB::Table's properties."""
    request: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
    }
    for key in ("LocalSecondaryIndexes", "GlobalSecondaryIndexes", "StreamSpecification"):
        if key in properties:
            request[key] = properties[key]
    return request
