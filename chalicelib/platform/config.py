"""Every environment variable the service reads, with its default, in one frozen object."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from urllib.parse import urlsplit

# Logical ids of the tables in infra/template.yaml. Each table's physical name comes from the
# environment variable derived from its logical id (JobsTable -> RUNNER_JOBS_TABLE), which the
# template sets on every function and local mode sets for itself.
TABLE_LOGICAL_IDS = ("UsersTable", "AccountsTable", "JobsTable", "ExecutionsTable", "ExecutionEventsTable",
                     "SchedulesTable", "ServiceAccountsTable", "DeliveriesTable", "SlotsTable",
                     "IdempotencyTable")

# Bearer tokens last 12 hours unless RUNNER_TOKEN_TTL_SECONDS says otherwise.
DEFAULT_TOKEN_TTL_SECONDS = 12 * 3600
# Lambda's ceiling, the worker function's Timeout in infra/template.yaml.
DEFAULT_LAMBDA_TIMEOUT_SECONDS = 900


def default_ceiling_margin(lambda_timeout_seconds: int) -> int:
    """How long before the ceiling a Lambda run is asked to stop: 60 s, or two fifths of a shorter
    ceiling (tests shorten it: at 120 s a run has 72 s, so a TTL of one minute still fits)."""
    return min(60, lambda_timeout_seconds * 2 // 5)


def table_env_var(logical_id: str) -> str:
    """The environment variable naming the physical table of a template logical id."""
    words = re.findall(r"[A-Z][a-z0-9]*", logical_id)
    return "RUNNER_" + "_".join(word.upper() for word in words)


def default_table_name(logical_id: str) -> str:
    """The table name used when the environment names none (local mode, tests)."""
    return "runner-" + logical_id.removesuffix("Table").lower()


def _int_env(environ: dict, name: str, default: int, minimum: int = 1) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class RepositoryRules:
    """Which git repositories a job may name."""

    # In the order messages name them.
    schemes: tuple[str, ...] = ("https", "ssh")


@dataclass(frozen=True)
class WebhookRules:
    """Where callbacks may be posted (checked at job write and again at every send).

    Always: global addresses only, on the scheme's own port (443, or 80 for http).
    """

    schemes: tuple[str, ...] = ("https",)
    # Loopback too, on any port but these (the service's own: local mode's API and emulator).
    allow_loopback: bool = False
    refused_loopback_ports: frozenset[int] = frozenset()


# Local mode clones from the developer's own machine, and posts to receivers on loopback.
LOCAL_REPOSITORY_RULES = RepositoryRules(schemes=("https", "ssh", "http", "file"))
LOCAL_WEBHOOK_RULES = WebhookRules(schemes=("https", "http"), allow_loopback=True)
LOCAL_API_PORT = 8000  # local mode's default RUNNER_PORT


def local_webhook_rules(env: dict) -> WebhookRules:
    """Local mode's webhook rules: loopback, but never the ports of its API and its emulator."""
    ports = set()
    try:
        ports.add(int(env.get("RUNNER_PORT") or LOCAL_API_PORT))
    except ValueError:
        pass  # local mode itself refuses to start with it
    endpoint = env.get("AWS_ENDPOINT_URL")
    if endpoint:
        try:
            ports.add(urlsplit(endpoint).port or (443 if endpoint.startswith("https:") else 80))
        except ValueError:
            pass
    return replace(LOCAL_WEBHOOK_RULES, refused_loopback_ports=frozenset(ports))


@dataclass(frozen=True)
class Settings:
    """The service's configuration, read once from the environment."""

    region: str = "us-east-1"
    tables: dict = field(default_factory=dict)
    kms_key_id: str = "alias/runner"
    token_ttl_seconds: int = DEFAULT_TOKEN_TTL_SECONDS
    repository_rules: RepositoryRules = RepositoryRules()
    webhook_rules: WebhookRules = WebhookRules()
    # Answer each request with the AWS calls it made (X-Runner-AWS-Calls), for local mode's benchmarks.
    report_aws_calls: bool = False
    run_queue_url: str = ""
    # Where the execution workflow hands a claimed run's task token to the run handoff.
    handoff_queue_url: str = ""
    # Where run slots are taken and given back (a FIFO queue, one message group per account).
    slot_queue_url: str = ""
    # Where the execution workflow says an attempt that may be retried is over, and where a retry
    # waits out its delay (chalicelib/executions/retries.py).
    retry_queue_url: str = ""
    execution_state_machine_arn: str = ""
    control_state_machine_arn: str = ""
    heartbeat_seconds: int = 60
    # Seconds in a minute of executionTtl: 60, except in tests that need a TTL to expire quickly.
    ttl_minute_seconds: int = 60
    event_retention_days: int = 90
    # The worker Lambda's timeout (the template's Worker Timeout): routing and the stop margin use it.
    lambda_timeout_seconds: int = DEFAULT_LAMBDA_TIMEOUT_SECONDS
    # How long before Lambda's ceiling a run is asked to stop gracefully.
    ceiling_margin_seconds: int = 60
    # Where runs that cannot fit in a Lambda invocation go (chalicelib/executions/launcher.py).
    fargate_queue_url: str = ""
    fargate_cluster: str = ""
    fargate_task_definition: str = ""
    fargate_subnets: tuple[str, ...] = ()
    fargate_security_group: str = ""
    fargate_assign_public_ip: bool = False
    max_concurrent_per_account: int = 4
    ttl_grace_seconds: int = 60
    kill_window_seconds: int = 30
    schedule_group: str = "runner"
    scheduler_role_arn: str = ""
    # Empty on AWS: found through the stack (`stack_name`) on first use.
    trigger_function_arn: str = ""
    stack_name: str = ""
    max_schedules_per_job: int = 25
    callback_queue_url: str = ""
    callback_dead_letter_queue_url: str = ""
    # A failed delivery is retried after base, 2 x base, 4 x base ... (at most 15 min, with jitter)
    # until this long after its first try; then it goes to the dead-letter queue.
    callback_retry_base_seconds: int = 2
    callback_retry_window_seconds: int = 3600
    callback_timeout_seconds: int = 5
    # The stack's S3 bucket for the worker's Galaxy install cache (runner_lambda/galaxy.py); empty: none.
    galaxy_cache_bucket: str = ""

    def table(self, logical_id: str) -> str:
        """Physical name of a table of the template."""
        return self.tables[logical_id]

    @classmethod
    def from_environ(cls, environ: dict | None = None) -> "Settings":
        """Build the settings from an environment mapping (os.environ by default)."""
        env = dict(os.environ if environ is None else environ)
        local = env.get("RUNNER_LOCAL", "") == "1"  # set by local mode for itself
        lambda_timeout = _int_env(env, "RUNNER_LAMBDA_TIMEOUT_SECONDS", DEFAULT_LAMBDA_TIMEOUT_SECONDS, minimum=16)
        tables = {
            logical: env.get(table_env_var(logical)) or default_table_name(logical)
            for logical in TABLE_LOGICAL_IDS
        }
        return cls(
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            tables=tables,
            kms_key_id=env.get("RUNNER_KMS_KEY_ID") or "alias/runner",
            token_ttl_seconds=_int_env(env, "RUNNER_TOKEN_TTL_SECONDS", DEFAULT_TOKEN_TTL_SECONDS),
            repository_rules=LOCAL_REPOSITORY_RULES if local else RepositoryRules(),
            webhook_rules=local_webhook_rules(env) if local else WebhookRules(),
            report_aws_calls=local,
            run_queue_url=env.get("RUNNER_RUN_QUEUE_URL", ""),
            handoff_queue_url=env.get("RUNNER_HANDOFF_QUEUE_URL", ""),
            slot_queue_url=env.get("RUNNER_SLOT_QUEUE_URL", ""),
            retry_queue_url=env.get("RUNNER_RETRY_QUEUE_URL", ""),
            execution_state_machine_arn=env.get("RUNNER_EXECUTION_STATE_MACHINE_ARN", ""),
            control_state_machine_arn=env.get("RUNNER_CONTROL_STATE_MACHINE_ARN", ""),
            heartbeat_seconds=_int_env(env, "RUNNER_HEARTBEAT_SECONDS", 60, minimum=3),
            ttl_minute_seconds=_int_env(env, "RUNNER_TTL_MINUTE_SECONDS", 60),
            event_retention_days=_int_env(env, "RUNNER_EVENT_RETENTION_DAYS", 90),
            lambda_timeout_seconds=lambda_timeout,
            ceiling_margin_seconds=_int_env(env, "RUNNER_CEILING_MARGIN_SECONDS", default_ceiling_margin(lambda_timeout)),
            fargate_queue_url=env.get("RUNNER_FARGATE_QUEUE_URL", ""),
            fargate_cluster=env.get("RUNNER_FARGATE_CLUSTER", ""),
            fargate_task_definition=env.get("RUNNER_FARGATE_TASK_DEFINITION", ""),
            fargate_subnets=tuple(item.strip() for item in env.get("RUNNER_FARGATE_SUBNETS", "").split(",")
                                  if item.strip()),
            fargate_security_group=env.get("RUNNER_FARGATE_SECURITY_GROUP", ""),
            fargate_assign_public_ip=env.get("RUNNER_FARGATE_ASSIGN_PUBLIC_IP", "") == "ENABLED",
            max_concurrent_per_account=_int_env(env, "RUNNER_MAX_CONCURRENT_PER_ACCOUNT", 4),
            ttl_grace_seconds=_int_env(env, "RUNNER_TTL_GRACE_SECONDS", 60, minimum=0),
            kill_window_seconds=_int_env(env, "RUNNER_KILL_WINDOW_SECONDS", 30),
            schedule_group=env.get("RUNNER_SCHEDULE_GROUP") or "runner",
            scheduler_role_arn=env.get("RUNNER_SCHEDULER_ROLE_ARN", ""),
            trigger_function_arn=env.get("RUNNER_TRIGGER_FUNCTION_ARN", ""),
            stack_name=env.get("RUNNER_STACK_NAME", ""),
            max_schedules_per_job=_int_env(env, "RUNNER_MAX_SCHEDULES_PER_JOB", 25),
            callback_queue_url=env.get("RUNNER_CALLBACK_QUEUE_URL", ""),
            callback_dead_letter_queue_url=env.get("RUNNER_CALLBACK_DEAD_LETTER_QUEUE_URL", ""),
            callback_retry_base_seconds=_int_env(env, "RUNNER_CALLBACK_RETRY_BASE_SECONDS", 2),
            callback_retry_window_seconds=_int_env(env, "RUNNER_CALLBACK_RETRY_WINDOW_SECONDS", 3600),
            callback_timeout_seconds=_int_env(env, "RUNNER_CALLBACK_TIMEOUT_SECONDS", 5),
            galaxy_cache_bucket=env.get("RUNNER_GALAXY_CACHE_BUCKET", ""),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use (never at import time)."""
    return Settings.from_environ()


def reset_settings() -> None:
    """Forget the cached settings (tests and local mode change the environment)."""
    get_settings.cache_clear()
