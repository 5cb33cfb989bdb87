"""Where an attempt runs: Lambda when its TTL fits in one invocation less the stop margin, else Fargate."""
from __future__ import annotations

import pytest

from chalicelib.executions.placement import FARGATE, LAMBDA, compute_for, lambda_budget_seconds
from chalicelib.platform.config import Settings


def test_on_aws_a_ttl_of_up_to_14_minutes_runs_on_lambda_and_the_default_180_on_fargate():
    settings = Settings.from_environ({})
    assert (settings.lambda_timeout_seconds, settings.ceiling_margin_seconds) == (900, 60)
    assert compute_for(14 * 60, settings) == LAMBDA
    assert compute_for(15 * 60, settings) == FARGATE
    assert compute_for(180 * 60, settings) == FARGATE


def test_a_shortened_ceiling_shortens_the_margin_so_that_one_minute_still_fits():
    settings = Settings.from_environ({"RUNNER_LAMBDA_TIMEOUT_SECONDS": "120"})
    assert settings.ceiling_margin_seconds == 48 and lambda_budget_seconds(settings) == 72
    assert compute_for(60, settings) == LAMBDA
    assert compute_for(75, settings) == FARGATE  # a 75 s run would be stopped at the margin on Lambda
    assert compute_for(180, settings) == FARGATE


def test_an_explicit_margin_wins():
    settings = Settings.from_environ({"RUNNER_LAMBDA_TIMEOUT_SECONDS": "120", "RUNNER_CEILING_MARGIN_SECONDS": "60"})
    assert lambda_budget_seconds(settings) == 60 and compute_for(61, settings) == FARGATE


@pytest.mark.parametrize("raw", ["ten", "15", "0"])
def test_a_lambda_timeout_below_16_seconds_or_not_a_number_is_refused_naming_the_variable(raw):
    with pytest.raises(ValueError, match="RUNNER_LAMBDA_TIMEOUT_SECONDS"):
        Settings.from_environ({"RUNNER_LAMBDA_TIMEOUT_SECONDS": raw})


def test_fargate_settings_are_read_from_the_environment():
    settings = Settings.from_environ({"RUNNER_FARGATE_SUBNETS": "subnet-1, subnet-2,", "RUNNER_FARGATE_ASSIGN_PUBLIC_IP": "ENABLED",
                                      "RUNNER_FARGATE_SECURITY_GROUP": "sg-1"})
    assert settings.fargate_subnets == ("subnet-1", "subnet-2")
    assert settings.fargate_assign_public_ip and settings.fargate_security_group == "sg-1"
    assert Settings.from_environ({}).fargate_subnets == ()
