"""Routing to Fargate and the Fargate launcher, against moto (Step Functions, SQS, ECS).

Which queue an attempt's run message goes to is decided at dispatch and recorded as the
execution's `compute`; the launcher turns a message of the Fargate queue into one ECS RunTask
whose container environment carries the message and nothing else.
"""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.executions.launcher import CONTAINER, LAUNCH_FAILED, LAUNCH_TRIES, MESSAGE_VARIABLE, FargateLauncher, \
    LaunchFailed
from chalicelib.platform import aws
from chalicelib.platform.config import get_settings, reset_settings

MESSAGE = {"taskToken": "queue-token", "accountAlias": "DEMO", "jobId": "a-job", "executionId": "an-execution",
           "attempt": 2}


def job(client, repo: Path, **extra) -> dict:
    body = {"repository": {"url": f"file://{repo}", "branch": "main", "defaultPlaybook": "site.yml"},
            "hosts": [{"id": "web1"}], **extra}
    return client.post("/jobs/DEMO", body).body[0]


def workflow_queue(execution_id: str) -> str:
    sfn = aws.client("stepfunctions")
    runs = sfn.list_executions(stateMachineArn=get_settings().execution_state_machine_arn)["executions"]
    run = next(run for run in runs if run["name"].startswith(execution_id))
    return json.loads(sfn.describe_execution(executionArn=run["executionArn"])["input"])["queueUrl"]


@pytest.mark.parametrize("ttl, compute", [(14, "lambda"), (15, "fargate"), (None, "fargate")])
def test_the_ttl_decides_the_compute_and_the_queue_of_the_run_message(client, repo, ttl, compute):
    created = job(client, repo, **({"executionTtl": ttl} if ttl else {}))
    started = client.post(f"/jobs/DEMO/{created['id']}/start", {})
    assert started.status == 201 and started.body["compute"] == compute
    settings = get_settings()
    assert workflow_queue(started.body["execution_id"]) == (
        settings.fargate_queue_url if compute == "fargate" else settings.run_queue_url)
    path = f"/jobs/DEMO/{created['id']}/executions"
    assert client.get(f"{path}/{started.body['execution_id']}").body["compute"] == compute
    assert [item["compute"] for item in client.get(path).body["results"]] == [compute]


@pytest.fixture
def ecs_stack(aws_stack, monkeypatch):
    """A cluster and a task definition in moto, named to the launcher as the template's Globals do."""
    ecs = aws.client("ecs")
    cluster = ecs.create_cluster(clusterName="fn-FargateCluster")["cluster"]["clusterArn"]
    definition = ecs.register_task_definition(
        family="fn-worker", requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="1024", memory="2048",
        # moto needs a container memory to place the task (Fargate takes the task's).
        containerDefinitions=[{"name": CONTAINER, "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/w:1", "memory": 2048,
                               "entryPoint": ["/var/lang/bin/python3", "-m", "runner_lambda.fargate"]}],
    )["taskDefinition"]["taskDefinitionArn"]
    monkeypatch.setenv("RUNNER_FARGATE_CLUSTER", cluster)
    monkeypatch.setenv("RUNNER_FARGATE_TASK_DEFINITION", definition)
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    # As a default VPC has it; moto 5.2.5's awsvpc task needs it to describe its network interface.
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.8.{index}.0/24")["Subnet"]["SubnetId"] for index in (1, 2)]
    group = ec2.create_security_group(GroupName="fn-workers", Description="outbound only", VpcId=vpc)["GroupId"]
    monkeypatch.setenv("RUNNER_FARGATE_SUBNETS", ",".join(subnets))
    monkeypatch.setenv("RUNNER_FARGATE_SECURITY_GROUP", group)
    reset_settings()
    return cluster, definition, subnets, group


class Workflow:
    """Records SendTaskFailure (the launcher's only Step Functions call)."""

    def __init__(self) -> None:
        self.failures: list[dict] = []

    def send_task_failure(self, **request) -> None:
        self.failures.append(request)


def test_the_launcher_starts_one_fargate_task_whose_environment_carries_only_the_message(ecs_stack):
    cluster, definition, _, _ = ecs_stack
    launcher = FargateLauncher(aws.client("ecs"), Workflow(), get_settings())
    task_arn = launcher.handle(json.dumps(MESSAGE), receive_count=1)
    task = aws.client("ecs").describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
    assert task["taskDefinitionArn"] == definition and task["launchType"] == "FARGATE"
    [override] = task["overrides"]["containerOverrides"]
    assert override["name"] == CONTAINER
    assert [variable["name"] for variable in override["environment"]] == [MESSAGE_VARIABLE]
    assert json.loads(override["environment"][0]["value"]) == MESSAGE


def test_the_launch_request_names_the_network_the_task_definition_and_one_task_per_attempt(ecs_stack):
    cluster, definition, subnets, group = ecs_stack
    requests: list[dict] = []

    class Ecs:
        def run_task(self, **request):
            requests.append(request)
            return aws.client("ecs").run_task(**request)

    FargateLauncher(Ecs(), Workflow(), get_settings()).handle(json.dumps(MESSAGE), receive_count=1)
    [request] = requests
    assert (request["cluster"], request["taskDefinition"], request["launchType"], request["count"]) == (
        cluster, definition, "FARGATE", 1)
    assert request["networkConfiguration"] == {"awsvpcConfiguration": {
        "subnets": subnets, "securityGroups": [group], "assignPublicIp": "DISABLED"}}
    assert request["clientToken"] == "an-execution-2"


def test_a_failed_launch_is_retried_and_its_last_try_fails_the_queue_task(ecs_stack, monkeypatch):
    monkeypatch.setenv("RUNNER_FARGATE_SUBNETS", "")
    reset_settings()
    workflow = Workflow()
    launcher = FargateLauncher(aws.client("ecs"), workflow, get_settings())
    for receive_count in range(1, LAUNCH_TRIES):
        with pytest.raises(LaunchFailed, match="FargateSubnets"):
            launcher.handle(json.dumps(MESSAGE), receive_count)
    assert workflow.failures == []
    assert launcher.handle(json.dumps(MESSAGE), LAUNCH_TRIES) is None
    [failure] = workflow.failures
    assert failure["taskToken"] == "queue-token" and failure["error"] == LAUNCH_FAILED
    assert "FargateSubnets" in failure["cause"]


def test_an_ecs_error_is_retried_too(ecs_stack, monkeypatch):
    monkeypatch.setenv("RUNNER_FARGATE_TASK_DEFINITION", "arn:aws:ecs:us-east-1:123456789012:task-definition/gone:1")
    reset_settings()
    launcher = FargateLauncher(aws.client("ecs"), Workflow(), get_settings())
    with pytest.raises(ClientError):
        launcher.handle(json.dumps(MESSAGE), receive_count=1)
