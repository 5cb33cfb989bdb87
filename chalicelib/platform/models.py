"""PynamoDB models of the tables of infra/template.yaml, bound to table names at run time.

One model per table, and one more on the accounts table: the token signing key's item.
"""
from __future__ import annotations

import threading

from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    VersionAttribute,
)
from pynamodb.connection import Connection
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection, LocalSecondaryIndex
from pynamodb.models import Model

from chalicelib.platform.aws import instrument, new_botocore_session
from chalicelib.platform.config import Settings, get_settings


class UsersByAccount(GlobalSecondaryIndex):
    """An account's users by username; holds no password hash (nor anything of the login throttle)."""

    class Meta:
        index_name = "accountAlias-index"
        projection = IncludeProjection(["roles", "createdTime"])

    account_alias = UnicodeAttribute(hash_key=True, attr_name="accountAlias")
    username = UnicodeAttribute(range_key=True)


class User(Model):
    """A person or program that logs in; belongs to exactly one account and has one role."""

    class Meta:
        table_name = "runner-users"

    username = UnicodeAttribute(hash_key=True)
    password_hash = UnicodeAttribute(attr_name="passwordHash")
    account_alias = UnicodeAttribute(attr_name="accountAlias")
    # One role (chalicelib/auth/roles.py), kept in a list as the original service's logins answer it.
    roles = ListAttribute(of=UnicodeAttribute, default=list)
    created_time = NumberAttribute(attr_name="createdTime")
    # Changed with the password and the role: tokens carrying another version are refused.
    # Absent on users stored before it existed (chalicelib/auth/users.py LEGACY_TOKEN_VERSION).
    token_version = UnicodeAttribute(attr_name="tokenVersion", null=True)
    # The login throttle (chalicelib/auth/throttle.py): tries since the last success, and the
    # epoch second until which logins are refused.
    failed_logins = NumberAttribute(attr_name="failedLogins", null=True)
    login_locked_until = NumberAttribute(attr_name="loginLockedUntil", null=True)
    by_account = UsersByAccount()


class Account(Model):
    """An account alias and the counters kept in the same transaction as what they count."""

    class Meta:
        table_name = "runner-accounts"

    account_alias = UnicodeAttribute(hash_key=True, attr_name="accountAlias")
    job_count = NumberAttribute(attr_name="jobCount", default=0)
    created_time = NumberAttribute(attr_name="createdTime")
    # At most this many executions run at once; None: the service's default.
    max_concurrent = NumberAttribute(attr_name="maxConcurrent", null=True)
    # The HMAC key that signs the account's webhooks, sealed by KMS (JSON envelope).
    webhook_secret = UnicodeAttribute(attr_name="webhookSecret", null=True)
    # Users whose role is ACCOUNT_ADMIN, moved in the same transaction as each user write; it
    # may not fall below 1. Absent on accounts older than it: counted on first need.
    admin_count = NumberAttribute(attr_name="adminCount", null=True)


# The accounts table's item that holds the token signing key. Account aliases start with a letter
# or a digit (users.ACCOUNT_ALIAS), so no account can ever take this key.
SIGNING_KEY_ITEM = "#token-signing-key"


class SigningKeyItem(Model):
    """The HMAC key that signs bearer tokens, as KMS sealed it (chalicelib/auth/signing_key.py).

    One item of the accounts table, under SIGNING_KEY_ITEM: a table of its own would be one more
    resource for one item, and the item is read by its key only (the authorizer's role may read
    no other item of the table).
    """

    class Meta:
        table_name = "runner-accounts"

    account_alias = UnicodeAttribute(hash_key=True, attr_name="accountAlias")
    # The CiphertextBlob of KMS GenerateDataKey (encryption context {"purpose": "token-signing"}), base64.
    sealed_key = UnicodeAttribute(attr_name="sealedKey")
    created_time = NumberAttribute(attr_name="createdTime")


class JobsByCreatedTime(LocalSecondaryIndex):
    """An account's jobs ordered by creation time (queried newest first)."""

    class Meta:
        index_name = "createdTime-index"
        projection = AllProjection()

    account_alias = UnicodeAttribute(hash_key=True, attr_name="accountAlias")
    created_time = NumberAttribute(range_key=True, attr_name="createdTime")


class Job(Model):
    """A job definition: the public spec as JSON, the secrets sealed apart."""

    class Meta:
        table_name = "runner-jobs"

    account_alias = UnicodeAttribute(hash_key=True, attr_name="accountAlias")
    job_id = UnicodeAttribute(range_key=True, attr_name="jobId")
    created_time = NumberAttribute(attr_name="createdTime")
    last_updated_time = NumberAttribute(attr_name="lastUpdatedTime")
    spec = UnicodeAttribute()
    sealed = UnicodeAttribute(null=True)
    version = VersionAttribute()
    # How many executions the job has: kept by JobExecutionCount in each start's transaction.
    # None on a job stored before it was kept (counted once, then kept).
    execution_count = NumberAttribute(null=True, attr_name="executionCount")
    by_created_time = JobsByCreatedTime()


class JobExecutionCount(Model):
    """The Jobs table seen for its execution counts only: a start counts itself in the job's item
    without the job's version moving (a start does not change the job's definition)."""

    class Meta:
        table_name = "runner-jobs"

    account_alias = UnicodeAttribute(hash_key=True, attr_name="accountAlias")
    job_id = UnicodeAttribute(range_key=True, attr_name="jobId")
    execution_count = NumberAttribute(null=True, attr_name="executionCount")
    by_created_time = JobsByCreatedTime()  # the table's index, declared as on Job (not queried through here)


class Timer(MapAttribute):
    """One attempt's run time, epoch ms (end is null while it runs)."""

    start = NumberAttribute(null=True)
    end = NumberAttribute(null=True)


class ExecutionsByCreatedTime(LocalSecondaryIndex):
    """A job's executions ordered by creation time (queried newest first)."""

    class Meta:
        index_name = "createdTime-index"
        projection = AllProjection()

    job_id = UnicodeAttribute(hash_key=True, attr_name="jobId")
    created_time = NumberAttribute(range_key=True, attr_name="createdTime")


class Execution(Model):
    """One execution of a job: its status, attempts and results. Status changes are conditional."""

    class Meta:
        table_name = "runner-executions"

    job_id = UnicodeAttribute(hash_key=True, attr_name="jobId")
    execution_id = UnicodeAttribute(range_key=True, attr_name="executionId")
    account_alias = UnicodeAttribute(attr_name="accountAlias")
    created_time = NumberAttribute(attr_name="createdTime")
    status = UnicodeAttribute()
    status_reason = UnicodeAttribute(null=True, attr_name="statusReason")
    attempt = NumberAttribute()
    timers = ListAttribute(of=Timer, default=list)
    target_hosts = ListAttribute(of=UnicodeAttribute, default=list, attr_name="targetHosts")
    failed_hosts = ListAttribute(of=UnicodeAttribute, default=list, attr_name="failedHosts")
    repository_log = UnicodeAttribute(null=True, attr_name="repositoryLog")  # JSON
    pinned_commit = UnicodeAttribute(null=True, attr_name="pinnedCommit")
    sealed_keys = UnicodeAttribute(null=True, attr_name="sealedKeys")  # JSON: keys given at start
    started_by = UnicodeAttribute(null=True, attr_name="startedBy")
    # The fire time of the schedule that started it (epoch ms); null for a start by a user.
    scheduled_time = NumberAttribute(null=True, attr_name="scheduledTime")
    # The job's callbacks when the execution started (JSON), and the last callback seq handed out.
    callbacks = UnicodeAttribute(null=True)
    notify_seq = NumberAttribute(null=True, attr_name="notifySeq")
    # The token of the execution workflow's Run task for the current attempt, stored by the run
    # handoff (chalicelib/executions/handoff.py); the worker heartbeats and reports with it.
    run_token = UnicodeAttribute(null=True, attr_name="runToken")
    stats = UnicodeAttribute(null=True)  # JSON: per-host ok/changed/failed/unreachable/skipped
    rc = NumberAttribute(null=True)
    updated_time = NumberAttribute(null=True, attr_name="updatedTime")
    # Where the current attempt's text starts in the execution's log (bytes), for the worker's
    # event offsets; None when earlier events carry no offsets (written before they existed).
    log_start = NumberAttribute(null=True, attr_name="logStart")
    # The run's options (JSON, chalicelib/executions/options.py), as given at start or restart.
    options = UnicodeAttribute(null=True)
    # The job's retry policy when the execution started (JSON: attempts, delaySeconds,
    # onlyFailedHosts), the automatic retries made so far, and when the next one is due (epoch ms;
    # set while a retry waits, see chalicelib/executions/retries.py).
    retry_policy = UnicodeAttribute(null=True, attr_name="retryPolicy")
    retries = NumberAttribute(null=True)
    retry_at = NumberAttribute(null=True, attr_name="retryAt")
    # Where the current attempt runs: "lambda" or "fargate" (chalicelib/executions/placement.py);
    # None for executions stored before it was recorded.
    compute = UnicodeAttribute(null=True)
    by_created_time = ExecutionsByCreatedTime()


class ExecutionEvent(Model):
    """One ansible-runner event of an execution; seq orders them across attempts."""

    class Meta:
        table_name = "runner-execution-events"

    execution_id = UnicodeAttribute(hash_key=True, attr_name="executionId")
    seq = NumberAttribute(range_key=True)
    attempt = NumberAttribute()
    event = UnicodeAttribute()
    host = UnicodeAttribute(null=True)
    task = UnicodeAttribute(null=True)
    stdout = UnicodeAttribute(null=True)
    created = UnicodeAttribute(null=True)
    data = UnicodeAttribute(null=True)  # JSON: the event's data, trimmed and masked
    expires_at = NumberAttribute(null=True, attr_name="expiresAt")
    # Where the event's stdout starts in the execution's log text, in UTF-8 bytes (see
    # chalicelib/executions/logtext.py); None for events written before offsets were kept.
    log_offset = NumberAttribute(null=True, attr_name="logOffset")


class ServiceAccount(Model):
    """Credentials a schedule logs in with when it fires; the password is sealed by KMS."""

    class Meta:
        table_name = "runner-service-accounts"

    account_alias = UnicodeAttribute(hash_key=True, attr_name="accountAlias")
    alias = UnicodeAttribute(range_key=True)
    id = UnicodeAttribute()
    username = UnicodeAttribute()
    sealed_password = UnicodeAttribute(attr_name="sealedPassword")  # JSON envelope
    # Schedules that name it, kept in the same transaction as each schedule write.
    schedule_count = NumberAttribute(default=0, attr_name="scheduleCount")
    created_time = NumberAttribute(attr_name="createdTime")
    last_updated_time = NumberAttribute(attr_name="lastUpdatedTime")


class Schedule(Model):
    """A job schedule: its trigger, the EventBridge Scheduler schedules that fire it, its last fire."""

    class Meta:
        table_name = "runner-schedules"

    job_id = UnicodeAttribute(hash_key=True, attr_name="jobId")
    id = UnicodeAttribute(range_key=True)
    account_alias = UnicodeAttribute(attr_name="accountAlias")
    schedule_id = UnicodeAttribute(attr_name="scheduleId")  # base name of the Scheduler schedules
    description = UnicodeAttribute(default="")
    service_account_alias = UnicodeAttribute(attr_name="serviceAccountAlias")
    trigger_type = UnicodeAttribute(attr_name="triggerType")  # cron | date
    expression = UnicodeAttribute()
    timezone = UnicodeAttribute(default="UTC")
    # The Scheduler expressions (cron(...) or at(...)), one per Scheduler schedule, in name order.
    aws_expressions = ListAttribute(of=UnicodeAttribute, attr_name="awsExpressions")
    status = UnicodeAttribute(default="ACTIVE")  # ACTIVE | COMPLETED
    revision = NumberAttribute(default=1)
    last_fire_time = NumberAttribute(null=True, attr_name="lastFireTime")
    last_execution_id = UnicodeAttribute(null=True, attr_name="lastExecutionId")
    last_error = UnicodeAttribute(null=True, attr_name="lastError")
    last_error_time = NumberAttribute(null=True, attr_name="lastErrorTime")
    created_time = NumberAttribute(attr_name="createdTime")
    last_updated_time = NumberAttribute(attr_name="lastUpdatedTime")
    # The options each fire starts its execution with (JSON, chalicelib/executions/options.py).
    options = UnicodeAttribute(null=True)


class Delivery(Model):
    """One webhook delivery (a notice for one callback URL), or a URL that answered 410 Gone."""

    class Meta:
        table_name = "runner-deliveries"

    execution_id = UnicodeAttribute(hash_key=True, attr_name="executionId")
    delivery_id = UnicodeAttribute(range_key=True, attr_name="deliveryId")
    url = UnicodeAttribute()
    level = UnicodeAttribute(null=True)
    seq = NumberAttribute(null=True)
    type = UnicodeAttribute(null=True)
    state = UnicodeAttribute()  # PENDING | DELIVERED | RETRYING | FAILED | GONE | SKIPPED
    status_code = NumberAttribute(null=True, attr_name="statusCode")
    tries = NumberAttribute(default=0)
    last_error = UnicodeAttribute(null=True, attr_name="lastError")
    first_try_time = NumberAttribute(null=True, attr_name="firstTryTime")
    last_try_time = NumberAttribute(null=True, attr_name="lastTryTime")
    expires_at = NumberAttribute(null=True, attr_name="expiresAt")


class RunSlot(Model):
    """One entry of an account's run slots (chalicelib/executions/slots.py keeps them).

    `entry` says which: `holder#<executionId>#<attempt>` holds a slot; `waiter#<seq>` waits for
    one, oldest first (seq zero-padded, so the sort key orders them); `ticket#<executionId>#<attempt>`
    finds a waiter's place; `next` holds the account's next seq.
    """

    class Meta:
        table_name = "runner-slots"

    account_alias = UnicodeAttribute(hash_key=True, attr_name="accountAlias")
    entry = UnicodeAttribute(range_key=True)
    job_id = UnicodeAttribute(null=True, attr_name="jobId")
    execution_id = UnicodeAttribute(null=True, attr_name="executionId")
    attempt = NumberAttribute(null=True)
    # The TakeSlot task token that a grant (or a refusal) ends.
    task_token = UnicodeAttribute(null=True, attr_name="taskToken")
    # A holder whose task was not told yet (the keeper stopped in between): told on the next fill.
    granted = BooleanAttribute(null=True)
    seq = NumberAttribute(null=True)
    since = NumberAttribute(null=True)


class IdempotencyRecord(Model):
    """The first answer to a request made with an Idempotency-Key (chalicelib/platform/idempotency.py)."""

    class Meta:
        table_name = "runner-idempotency"

    account_alias = UnicodeAttribute(hash_key=True, attr_name="accountAlias")
    # SHA-256 of the route (method, path template, path parameters) and the key.
    request_key = UnicodeAttribute(range_key=True, attr_name="requestKey")
    route = UnicodeAttribute()
    # SHA-256 of the request's query and body as canonical JSON: the same key must come with the same request.
    fingerprint = UnicodeAttribute()
    state = UnicodeAttribute()  # IN_PROGRESS | DONE
    # Who holds an IN_PROGRESS claim, and until when (epoch s): a claim whose request died is taken over after it.
    claim_id = UnicodeAttribute(attr_name="claimId")
    claimed_until = NumberAttribute(attr_name="claimedUntil")
    status_code = NumberAttribute(null=True, attr_name="statusCode")
    headers = UnicodeAttribute(null=True)  # JSON object
    body = BinaryAttribute(null=True, legacy_encoding=False)  # the answer's body, zlib-compressed
    body_is_json = NumberAttribute(null=True, attr_name="bodyIsJson")
    created_time = NumberAttribute(attr_name="createdTime")
    expires_at = NumberAttribute(attr_name="expiresAt")  # DynamoDB's TTL: a day after the first call


# Model class -> logical id of its table in infra/template.yaml.
MODELS = {User: "UsersTable", Account: "AccountsTable", SigningKeyItem: "AccountsTable", Job: "JobsTable", JobExecutionCount: "JobsTable",
          Execution: "ExecutionsTable", ExecutionEvent: "ExecutionEventsTable",
          Schedule: "SchedulesTable", ServiceAccount: "ServiceAccountsTable", Delivery: "DeliveriesTable",
          RunSlot: "SlotsTable", IdempotencyRecord: "IdempotencyTable"}

_bound: dict = {"settings": None, "connection": None}
# Models bound one by one (bind_one), each with the settings it was bound to.
_bound_alone: dict = {}
_lock = threading.Lock()


def _bind_model(model: type[Model], settings: Settings) -> None:
    model.Meta.table_name = settings.table(MODELS[model])
    model.Meta.region = settings.region
    model.Meta.max_pool_connections = 32  # PynamoDB's default of 10 overflows under load
    model._connection = None
    instrument(_client_of(model._get_connection().connection))


def _client_of(connection: Connection) -> object:
    """The connection's botocore client, made from a session sharing the process's botocore data
    (PynamoDB would make a session of its own for each connection, parsing that data again)."""
    connection._local.session = new_botocore_session()  # the session `client` creates itself from
    return connection.client


def bind(settings: Settings | None = None) -> None:
    """Point every model at its table and region; idempotent for the same settings."""
    settings = settings or get_settings()
    with _lock:
        if _bound["settings"] == settings:
            return
        for model in MODELS:
            _bind_model(model, settings)
        _bound_alone.clear()
        connection = Connection(region=settings.region)
        instrument(_client_of(connection))
        _bound["connection"] = connection
        _bound["settings"] = settings


def bind_one(model: type[Model], settings: Settings | None = None) -> None:
    """Point one model at its table, for a function that uses no other (binding costs a client per
    model: the token authorizer's cold start would pay for all of them); idempotent."""
    settings = settings or get_settings()
    with _lock:
        if _bound["settings"] == settings or _bound_alone.get(model) == settings:
            return
        _bind_model(model, settings)
        _bound_alone[model] = settings


def connection() -> Connection:
    """The shared connection transactions run on (a new one per call would cost a new client)."""
    bind()
    return _bound["connection"]


def unbind() -> None:
    """Forget the binding (tests switch endpoints between cases)."""
    with _lock:
        _bound["settings"] = None
        _bound["connection"] = None
        _bound_alone.clear()
        for model in MODELS:
            model._connection = None
