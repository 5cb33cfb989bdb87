"""Lambda entry point: one SQS batch of run messages, partial failures reported."""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.platform import aws
from chalicelib.platform.config import get_settings
from chalicelib.platform.wiring import execution_service, job_service, notifier
from runner_lambda.isolation import EnvironmentTainted, close_worker, reset_environment
from runner_lambda.galaxy import InstallCache
from runner_lambda.processes import become_subreaper
from runner_lambda.worker import Attempt, Dependencies, RunMessage

logger = logging.getLogger("runner.worker")


@lru_cache(maxsize=1)
def dependencies() -> Dependencies:
    """The worker's clients, built on first use."""
    settings = get_settings()
    bucket = settings.galaxy_cache_bucket
    return Dependencies(settings=settings, jobs=job_service(), executions=execution_service(),
                        stepfunctions=aws.client("stepfunctions"), notifier=notifier(),
                        galaxy_cache=InstallCache(aws.client("s3") if bucket else None, bucket))


_context: dict = {"lambda": None}


def run_record(record: SQSRecord) -> str:
    """Run the attempt a message names; a duplicate delivery runs nothing."""
    return run_message(record.body, _context["lambda"])


def run_message(body: str, context: Any) -> str:
    """Run the attempt of one run message (Lambda's SQS record, or a Fargate task's message).

    `context` is Lambda's (its remaining time is the ceiling the supervisor watches), or None
    where no ceiling applies (a Fargate task: the TTL bounds it).
    """
    message = RunMessage.parse(body)
    _leave_nothing()
    try:
        return Attempt(message, dependencies(), context).run()
    finally:
        _leave_nothing()


def _leave_nothing() -> None:
    """Clean the environment between runs; one that cannot be cleaned serves no further run."""
    cache = dependencies().galaxy_cache
    try:
        reset_environment(keep=(cache.directory.name,) if cache is not None else ())
        if cache is not None:
            cache.prune()  # what a playbook put into the kept cache directory goes too
    except EnvironmentTainted as exc:
        # Exiting discards the environment (Lambda starts a fresh one; local mode, a fresh
        # sandbox). The attempt's result is already reported; a redelivered message is a duplicate.
        logger.critical("%s; this environment is discarded", exc)
        logging.shutdown()
        os._exit(70)


def handler(event: dict, context: Any) -> dict:
    """Process a batch; failed records are reported so that only they are delivered again."""
    become_subreaper()
    close_worker()
    _context["lambda"] = context
    return process_partial_response(event=event, record_handler=run_record,
                                    processor=BatchProcessor(event_type=EventType.SQS), context=context)
