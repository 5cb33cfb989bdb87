"""Where an attempt runs: on Lambda when its time-to-live fits in one invocation, else on Fargate.

A Lambda invocation ends at the function's timeout, and the worker asks a run to stop a margin
before it (runner_lambda/supervision.py). An attempt whose TTL fits within that runs on Lambda;
any other runs as a Fargate task of the same image and handler code, through the Fargate queue
and its launcher (chalicelib/executions/launcher.py). The execution workflow is the same either
way: only the queue its `Queue` state sends the run message to differs.
"""
from __future__ import annotations

from chalicelib.platform.config import Settings

LAMBDA = "lambda"
FARGATE = "fargate"
COMPUTES = (LAMBDA, FARGATE)


def lambda_budget_seconds(settings: Settings) -> int:
    """The longest TTL a Lambda run can honour: the ceiling less the stop margin."""
    return settings.lambda_timeout_seconds - settings.ceiling_margin_seconds


def compute_for(ttl_seconds: int, settings: Settings) -> str:
    """`lambda` when a run of this TTL fits in one invocation, else `fargate`."""
    return LAMBDA if ttl_seconds <= lambda_budget_seconds(settings) else FARGATE

