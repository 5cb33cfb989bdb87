"""What the deploy asks CloudFormation for: capabilities, parameters, and the template as read (no IO but a file)."""
from __future__ import annotations

import pytest

from chalicelib.platform.template import load_template
from deploy import DeployError
from deploy.stack import capabilities, stack_parameters

TEMPLATE = {"Parameters": {"WorkerImageUri": {"Type": "String"},
                           "HeartbeatSeconds": {"Type": "Number", "Default": 60},
                           "WorkerReservedConcurrency": {"Type": "String", "Default": ""}}}


def test_capabilities_follow_what_the_template_holds():
    role = {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {}}}
    assert capabilities({"Resources": {"Role": role}}) == ["CAPABILITY_IAM"]
    named = {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "runner-scheduler"}}
    assert capabilities({"Transform": "AWS::Serverless-2016-10-31", "Resources": {"Role": named}}) == [
        "CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]


def test_a_value_set_earlier_is_kept_and_a_default_follows_the_template():
    previous = {"WorkerImageUri": "repo:old", "HeartbeatSeconds": "30", "WorkerReservedConcurrency": ""}

    assert stack_parameters(TEMPLATE, {"WorkerImageUri": "repo:new"}, previous) == [
        {"ParameterKey": "WorkerImageUri", "ParameterValue": "repo:new"},
        {"ParameterKey": "HeartbeatSeconds", "UsePreviousValue": True}]
    assert stack_parameters(TEMPLATE, {"WorkerImageUri": "repo:new", "HeartbeatSeconds": "60"}, previous) == [
        {"ParameterKey": "WorkerImageUri", "ParameterValue": "repo:new"},
        {"ParameterKey": "HeartbeatSeconds", "ParameterValue": "60"}]


def test_an_unknown_or_missing_parameter_stops_the_deploy():
    with pytest.raises(DeployError, match="the template has no parameter HeartbeatSecond "):
        stack_parameters(TEMPLATE, {"WorkerImageUri": "repo:1", "HeartbeatSecond": "30"}, {})
    with pytest.raises(DeployError, match="WorkerImageUri has no default"):
        stack_parameters(TEMPLATE, {}, {})


def test_short_form_condition_reads_as_cloudformation_spells_it(tmp_path):
    path = tmp_path / "template.yaml"
    path.write_text("Conditions:\n  Both: !And [!Condition A, !Equals [!Ref P, x]]\n")

    assert load_template(path)["Conditions"]["Both"] == {
        "Fn::And": [{"Condition": "A"}, {"Fn::Equals": [{"Ref": "P"}, "x"]}]}
