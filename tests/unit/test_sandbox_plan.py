"""What the local workers' sandbox takes from the worker image's Dockerfile, and what it passes on."""
from __future__ import annotations

from localmode.sandbox import (
    LAMBDA_ENVIRONMENT, SandboxPlan, dockerfile_copies, dockerfile_environment, worker_environment, wrap,
)


def test_the_task_root_holds_what_the_dockerfile_copies_there():
    assert dockerfile_copies() == [("chalicelib", "chalicelib"), ("runner_lambda", "runner_lambda")]


def test_the_dockerfiles_environment_reaches_the_worker():
    assert dockerfile_environment()["HOME"] == "/tmp"
    environment = worker_environment({"RUNNER_RUN_QUEUE_URL": "q", "AWS_REGION": "us-east-1",
                                      "HOME": "/root", "SSH_AUTH_SOCK": "/run/agent", "PYTHONPATH": "/work"})
    assert environment["HOME"] == "/tmp"
    assert environment["RUNNER_RUN_QUEUE_URL"] == "q" and environment["AWS_REGION"] == "us-east-1"
    assert "SSH_AUTH_SOCK" not in environment
    assert environment["PYTHONPATH"] == "/var/task:/var/runtime"
    assert LAMBDA_ENVIRONMENT.items() <= environment.items()


def test_a_fargate_tasks_sandbox_has_fargates_variables_not_lambdas():
    environment = worker_environment({"RUNNER_RUN_MESSAGE": "{}", "AWS_REGION": "us-east-1"}, fargate=True)
    assert environment["AWS_EXECUTION_ENV"] == "AWS_ECS_FARGATE" and environment["RUNNER_RUN_MESSAGE"] == "{}"
    assert not [name for name in environment if name.startswith("AWS_LAMBDA_")]
    assert environment["HOME"] == "/tmp" and environment["PYTHONPATH"] == "/var/task:/var/runtime"


def test_a_plan_travels_as_json():
    plan = SandboxPlan(task_source="/s/task", runtime_source="/s/runtime", tmp_mb=64, reachable=["/opt/py"])
    assert SandboxPlan.from_json(plan.to_json()) == plan
    command = wrap(["python", "-m", "localmode.worker_process"], plan)
    assert command[:2] == ["unshare", "--mount"] and "--pid" in command
    assert command[-4:] == ["--", "python", "-m", "localmode.worker_process"]
