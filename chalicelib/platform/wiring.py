"""Lazy, cached construction of the services the routes call (nothing is built at import)."""
from __future__ import annotations

from functools import lru_cache

from chalicelib.platform import aws
from chalicelib.platform.config import get_settings
from chalicelib.jobs.service import JobService
from chalicelib.auth.signing_key import IssuerSigningKey, SigningKey


@lru_cache(maxsize=1)
def job_service() -> JobService:
    """The Jobs service bound to this process's settings."""
    settings = get_settings()
    return JobService(aws.client("kms"), settings.kms_key_id, settings.repository_rules, settings.webhook_rules)


@lru_cache(maxsize=1)
def signing_key() -> IssuerSigningKey:
    """The token signing key, for issuing tokens (read, or created, on first use)."""
    return IssuerSigningKey(aws.client("kms"), get_settings().kms_key_id)


@lru_cache(maxsize=1)
def verifying_key() -> SigningKey:
    """The token signing key, for checking tokens: read on first use, never created."""
    return SigningKey(aws.client("kms"))


def reset() -> None:
    """Forget every cached service (tests and local mode rebuild them)."""
    job_service.cache_clear()
    signing_key.cache_clear()
    verifying_key.cache_clear()
    execution_service.cache_clear()
    service_account_service.cache_clear()
    schedule_service.cache_clear()
    notifier.cache_clear()
    webhook_secrets.cache_clear()
    sender.cache_clear()
    run_handoff.cache_clear()
    slot_queue.cache_clear()
    slot_keeper.cache_clear()
    idempotency.cache_clear()
    retries.cache_clear()
    fargate_launcher.cache_clear()


@lru_cache(maxsize=1)
def execution_service():
    """The Executions service bound to this process's settings."""
    from chalicelib.executions.service import ExecutionService

    return ExecutionService(job_service(), aws.client("kms"), aws.client("stepfunctions"), get_settings(), notifier(),
                            slot_queue())


@lru_cache(maxsize=1)
def service_account_service():
    """The Service Accounts service bound to this process's settings."""
    from chalicelib.auth.service_accounts import ServiceAccountService

    return ServiceAccountService(aws.client("kms"), get_settings().kms_key_id)


@lru_cache(maxsize=1)
def schedule_service():
    """The Schedules service bound to this process's settings."""
    from chalicelib.schedules.eventbridge import SchedulerSchedules
    from chalicelib.schedules.service import ScheduleService

    settings = get_settings()
    scheduler = SchedulerSchedules(aws.client("scheduler"), settings,
                                   None if settings.trigger_function_arn else aws.client("cloudformation"))
    return ScheduleService(job_service(), service_account_service(), execution_service(), scheduler, settings)


@lru_cache(maxsize=1)
def notifier():
    """Puts callback notices on the callback queue."""
    from chalicelib.callbacks.notices import Notifier

    return Notifier(aws.client("sqs"), get_settings().callback_queue_url)


@lru_cache(maxsize=1)
def webhook_secrets():
    """The accounts' webhook signing secrets."""
    from chalicelib.callbacks.sender import WebhookSecrets

    return WebhookSecrets(aws.client("kms"), get_settings().kms_key_id)


@lru_cache(maxsize=1)
def sender():
    """The callback queue's handler."""
    from chalicelib.callbacks.sender import Sender

    return Sender(get_settings(), notifier(), aws.client("sqs"), webhook_secrets())


@lru_cache(maxsize=1)
def run_handoff():
    """The handoff queue's handler: the execution workflow's Run task token to the execution."""
    from chalicelib.executions.handoff import RunHandoff

    return RunHandoff(aws.client("stepfunctions"))


@lru_cache(maxsize=1)
def slot_queue():
    """Sends leave and fill messages to the slot keeper."""
    from chalicelib.executions.slots import SlotQueue

    return SlotQueue(aws.client("sqs"), get_settings().slot_queue_url)


@lru_cache(maxsize=1)
def slot_keeper():
    """The slot queue's handler: takes, leaves and fills of the accounts' run slots."""
    from chalicelib.executions.slots import SlotKeeper, account_limit

    default = get_settings().max_concurrent_per_account
    return SlotKeeper(aws.client("stepfunctions"), lambda account: account_limit(account, default))


def slot_reconciler():
    """Releases the run slots of workflows that no longer run."""
    from chalicelib.executions.slots import SlotReconciler

    return SlotReconciler(aws.client("stepfunctions"), get_settings().execution_state_machine_arn, slot_queue())


@lru_cache(maxsize=1)
def idempotency():
    """Idempotency keys of the POST routes that create (chalicelib/platform/idempotency.py)."""
    from chalicelib.platform.idempotency import Idempotency

    return Idempotency()


@lru_cache(maxsize=1)
def retries():
    """The retry queue's handler: retries of failed attempts, started when due."""
    from chalicelib.executions.retries import Retries

    settings = get_settings()
    return Retries(execution_service(), job_service(), aws.client("sqs"), settings.retry_queue_url)


@lru_cache(maxsize=1)
def fargate_launcher():
    """The Fargate queue's handler: one ECS Fargate task per run message."""
    from chalicelib.executions.launcher import FargateLauncher

    return FargateLauncher(aws.client("ecs"), aws.client("stepfunctions"), get_settings())
