"""Runner's REST API: routes only; every rule lives in chalicelib/."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import yaml
from chalice import AuthResponse, Chalice, Rate, Response

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor, EventType, SqsFifoPartialProcessor, process_partial_response,
)

from chalicelib.platform import wiring as services
from chalicelib.auth import roles, users
from chalicelib.callbacks import sender as webhooks
from chalicelib.executions.handoff import Handoff
from chalicelib.executions.slots import UNFINISHED, SlotMessage, release_ended_workflow
from chalicelib.platform.config import get_settings
from chalicelib.platform.errors import AuthorizerDenied, Unauthenticated
from chalicelib.platform.web import (
    bool_param, caller_name, count_aws_calls, events_params, json_response, list_params, offset_param, page_params,
    parse_json_body, reshape_foreign_errors,
)
from chalicelib.platform.web import api as _api
from chalicelib.platform.web import idempotent as _idempotent
from chalicelib.auth.tokens import bearer_token, issue_token, verify_token

app = Chalice(app_name="runner")
app.register_middleware(reshape_foreign_errors, "http")
app.register_middleware(count_aws_calls, "http")
OPENAPI_PATH = Path(__file__).resolve().parent / "chalicelib" / "platform" / "openapi.yaml"


# Clients are asked for application/json; curl -d and bare requests send the others.
BODY_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded"]


def route(path, method, idempotent=False):
    """Register a view with the role chalicelib/auth/roles.py gives it (a route it does not name
    fails here): token-guarded unless PUBLIC, path account and role checked, errors mapped;
    `idempotent`: an Idempotency-Key header replays the first answer of that key."""
    needed = roles.required_role(method, path)

    def register(view):
        handler = _idempotent(view, lambda: app.current_request, method, path, services.idempotency) \
            if idempotent else view
        wrapped = _api(handler, lambda: app.current_request, f"{method} {path}", needed)
        return app.route(path, methods=[method], content_types=BODY_TYPES,
                         authorizer=None if needed == roles.PUBLIC else token_authorizer)(wrapped)
    return register


def body(required: bool = True):
    """The current request's JSON body."""
    return parse_json_body(app.current_request.raw_body, required)


def query():
    """The current request's query parameters."""
    return app.current_request.query_params or {}


# No caching of the answer (API Gateway caches it 300 s by default): a token must stop working
# the moment its user is deleted or changes password or role.
@app.authorizer(ttl_seconds=0)
def token_authorizer(auth_request):
    """Accept a valid bearer token whose user still stands as it did when it was issued; the
    routes check that its account owns the path and that its role suffices."""
    try:
        claimed = verify_token(services.verifying_key().get(), bearer_token(auth_request.token))
        principal = users.current_principal(claimed)
    except Unauthenticated as denied:
        raise AuthorizerDenied(denied.message) from None
    return AuthResponse(routes=["*"], principal_id=principal.username,
                        context={"accountAlias": principal.account_alias, "role": principal.roles[0]})


@route("/health", "GET")
def health():
    return {"status": "ok"}


@route("/openapi.json", "GET")
def openapi():
    return _openapi_document()


@functools.lru_cache(maxsize=1)
def _openapi_document():
    return yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))


@route("/authentication/login", "POST")
def login():
    username, password = users.check_login_body(body())
    principal = users.authenticate(username, password)
    token = issue_token(services.signing_key().get(), principal, get_settings().token_ttl_seconds)
    return {"userName": principal.username, "accountAlias": principal.account_alias,
            "roles": list(principal.roles), "bearerToken": token}


@route("/jobs/{accountAlias}", "POST", idempotent=True)
def create_job(accountAlias):
    immediate = bool_param(query(), "immediate")
    job = services.job_service().create(accountAlias, body())
    return json_response([job], 201, _start_if(immediate, accountAlias, job["id"]))


@route("/jobs/{accountAlias}", "GET")
def list_jobs(accountAlias):
    page = services.job_service().list(accountAlias, list_params(query()))
    return json_response(page.body, 200, page.headers)


@route("/jobs/{accountAlias}/{jobId}", "GET")
def get_job(accountAlias, jobId):
    return services.job_service().get(accountAlias, jobId)


@route("/jobs/{accountAlias}/{jobId}", "PUT")
def update_job(accountAlias, jobId):
    immediate = bool_param(query(), "immediate")
    job = services.job_service().update(accountAlias, jobId, body())
    return json_response([job], 200, _start_if(immediate, accountAlias, jobId))


@route("/jobs/{accountAlias}/{jobId}", "DELETE")
def delete_job(accountAlias, jobId):
    services.schedule_service().delete_job(accountAlias, jobId)
    return json_response(None, 204)


def _start_if(immediate, account, job_id):
    """`?immediate=true`: start an execution now; its id comes back in a header."""
    if not immediate:
        return {}
    execution = services.execution_service().start(account, job_id, {}, caller_name(app.current_request))
    return {"X-Runner-Execution-Id": execution["execution_id"]}


@route("/jobs/{accountAlias}/{jobId}/start", "POST", idempotent=True)
def start_job(accountAlias, jobId):
    execution = services.execution_service().start(accountAlias, jobId, body(required=False),
                                                   caller_name(app.current_request))
    return json_response(execution, 201)


@route("/jobs/{accountAlias}/{jobId}/executions", "GET")
def list_executions(accountAlias, jobId):
    page = services.execution_service().list(accountAlias, jobId, list_params(query()))
    return json_response(page.body, 200, page.headers)


@route("/jobs/{accountAlias}/{jobId}/executions/{executionId}", "GET")
def get_execution(accountAlias, jobId, executionId):
    return services.execution_service().get(accountAlias, jobId, executionId)


@route("/jobs/{accountAlias}/{jobId}/executions/{executionId}/restart", "POST", idempotent=True)
def restart_execution(accountAlias, jobId, executionId):
    execution = services.execution_service().restart(accountAlias, jobId, executionId, body(required=False))
    return json_response(execution, 202)


@route("/jobs/{accountAlias}/{jobId}/executions/{executionId}/events", "GET")
def execution_events(accountAlias, jobId, executionId):
    after, size = events_params(query())
    return services.execution_service().events(accountAlias, jobId, executionId, after, size)


@route("/jobs/{accountAlias}/{jobId}/executions/{executionId}/log", "GET")
def execution_log(accountAlias, jobId, executionId):
    chunk = services.execution_service().log(accountAlias, jobId, executionId, offset_param(query()))
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if chunk.next_offset is not None:
        headers["X-Runner-Log-Next-Offset"] = str(chunk.next_offset)
    return Response(body=chunk.text, status_code=200, headers=headers)


@route("/jobs/{accountAlias}/{jobId}/executions/{executionId}/stop", "POST")
def stop_execution(accountAlias, jobId, executionId):
    execution = services.execution_service().stop(accountAlias, jobId, executionId, body(required=False),
                                                  caller_name(app.current_request))
    return json_response(execution, 202)


@route("/jobs/{accountAlias}/{jobId}/executions/{executionId}/kill", "POST")
def kill_execution(accountAlias, jobId, executionId):
    execution = services.execution_service().kill(accountAlias, jobId, executionId, body(required=False),
                                                  caller_name(app.current_request))
    return json_response(execution, 202)


@route("/jobs/{accountAlias}/{jobId}/schedules", "POST")
def create_schedule(accountAlias, jobId):
    return json_response(services.schedule_service().create(accountAlias, jobId, body()), 201)


@route("/jobs/{accountAlias}/{jobId}/schedules", "GET")
def list_schedules(accountAlias, jobId):
    page, size = page_params(query())
    return services.schedule_service().list(accountAlias, jobId, page, size)


@route("/jobs/{accountAlias}/{jobId}/schedules/{scheduleId}", "GET")
def get_schedule(accountAlias, jobId, scheduleId):
    return services.schedule_service().get(accountAlias, jobId, scheduleId)


@route("/jobs/{accountAlias}/{jobId}/schedules/{scheduleId}", "PUT")
def update_schedule(accountAlias, jobId, scheduleId):
    return services.schedule_service().update(accountAlias, jobId, scheduleId, body())


@route("/jobs/{accountAlias}/{jobId}/schedules/{scheduleId}", "DELETE")
def delete_schedule(accountAlias, jobId, scheduleId):
    services.schedule_service().delete(accountAlias, jobId, scheduleId)
    return json_response(None, 204)


@route("/serviceAccounts/{accountAlias}", "POST")
def create_service_account(accountAlias):
    return json_response(services.service_account_service().create(accountAlias, body()), 201)


@route("/serviceAccounts/{accountAlias}", "GET")
def list_service_accounts(accountAlias):
    return services.service_account_service().list(accountAlias)


@route("/serviceAccounts/{accountAlias}/{serviceAccountAlias}", "GET")
def get_service_account(accountAlias, serviceAccountAlias):
    return services.service_account_service().get(accountAlias, serviceAccountAlias)


@route("/serviceAccounts/{accountAlias}/{serviceAccountAlias}", "PUT")
def update_service_account(accountAlias, serviceAccountAlias):
    return services.service_account_service().update(accountAlias, serviceAccountAlias, body())


@route("/serviceAccounts/{accountAlias}/{serviceAccountAlias}", "DELETE")
def delete_service_account(accountAlias, serviceAccountAlias):
    services.service_account_service().delete(accountAlias, serviceAccountAlias)
    return json_response(None, 204)


@app.lambda_function(name="schedule_trigger")
def schedule_trigger(event, context):
    """EventBridge Scheduler's target: one fire of a job schedule."""
    return services.schedule_service().fire(event)


@app.schedule(Rate(1, unit=Rate.HOURS), name="schedule_reconciler")
def schedule_reconciler(event):
    """Hourly: make Scheduler match the stored schedules (repairs what a crash left halfway)."""
    return services.schedule_service().reconcile()


@route("/jobs/{accountAlias}/{jobId}/executions/{executionId}/deliveries", "GET")
def execution_deliveries(accountAlias, jobId, executionId):
    services.execution_service().get(accountAlias, jobId, executionId)  # 404 unless it is the account's
    return {"executionId": executionId, "results": webhooks.list_deliveries(executionId)}


@route("/webhookSecret/{accountAlias}", "GET")
def get_webhook_secret(accountAlias):
    return {"accountAlias": accountAlias, "webhookSecret": services.webhook_secrets().get(accountAlias)}


@route("/webhookSecret/{accountAlias}", "POST")
def rotate_webhook_secret(accountAlias):
    return {"accountAlias": accountAlias, "webhookSecret": services.webhook_secrets().rotate(accountAlias)}


@route("/users/{accountAlias}", "POST")
def create_user(accountAlias):
    return json_response(users.add_user(accountAlias, body()), 201)


@route("/users/{accountAlias}", "GET")
def list_users(accountAlias):
    return users.list_users(accountAlias)


@route("/users/{accountAlias}/{username}", "GET")
def get_user(accountAlias, username):
    return users.get_user(accountAlias, username)


@route("/users/{accountAlias}/{username}", "PUT")
def update_user(accountAlias, username):
    return users.update_user(accountAlias, username, body())


@route("/users/{accountAlias}/{username}", "DELETE")
def delete_user(accountAlias, username):
    users.delete_user(accountAlias, username)
    return json_response(None, 204)


def each_message(event, handle, in_order: bool = False):
    """Hand each message of an SQS event to `handle(record)`; answer the failed ones (a partial
    batch response: stack/package.py turns ReportBatchItemFailures on for every queue consumer).
    `in_order` (a FIFO queue): the first failure fails every later message too, none is handled
    out of its order."""
    processor = SqsFifoPartialProcessor() if in_order else BatchProcessor(event_type=EventType.SQS)
    return process_partial_response(event=event.to_dict(), record_handler=handle, processor=processor,
                                    context=event.context)


# Batch size 1 on AWS: one slow delivery must not hold others back. Local mode polls four at a
# time and honours the partial response.
@app.on_sqs_message(queue="CallbackQueue", batch_size=1, name="callback_sender")
def callback_sender(event):
    """The callback queue: status changes become notices, deliveries are POSTed (partial failures reported)."""
    return each_message(event, lambda record: services.sender().handle(json.loads(record.body)))


# The execution workflow's Run task token of a claimed run (chalicelib/executions/handoff.py says
# why it travels apart from the run message). Batch size 1 as the callback sender's, for the same
# reason. The Run task's heartbeat window is open while a handoff waits: its pollers are capped
# (a throttled batch comes back only after the queue's visibility timeout), and the stack's
# HandoffReservedConcurrency parameter can give it capacity of its own.
@app.on_sqs_message(queue="RunHandoffQueue", batch_size=1, name="run_handoff", maximum_concurrency=5)
def run_handoff(event):
    """The handoff queue: each Run task token is stored on its execution, or ends the task of an ended attempt."""
    return each_message(event, lambda record: services.run_handoff().handle(Handoff.parse(record.body)))


# The accounts' run slots (chalicelib/executions/slots.py). The slot queue is FIFO with the
# account as message group: a batch holds messages in the order sent, handled in that order.
@app.on_sqs_message(queue="SlotQueue", batch_size=10, name="slot_keeper")
def slot_keeper(event):
    """The slot queue: each take, leave and fill of an account's run slots, in order."""
    return each_message(event, lambda record: services.slot_keeper().handle(SlotMessage.parse(record.body)),
                        in_order=True)


# Any end of an execution workflow gives its run slot back: ReleaseSlot does it on the way out;
# a workflow that fails, times out or is aborted first is released here. `${ExecutionStateMachine}`
# becomes the stack's state machine ARN in `make package` (stack/package.py).
@app.on_cw_event({"source": ["aws.states"], "detail-type": ["Step Functions Execution Status Change"],
                  "detail": {"status": list(UNFINISHED), "stateMachineArn": ["${ExecutionStateMachine}"]}},
                 name="slot_release")
def slot_release(event):
    """EventBridge: an execution workflow ended without releasing its slot."""
    release_ended_workflow(event.to_dict(), get_settings().execution_state_machine_arn, services.slot_queue())


# Hourly, as the schedule reconciler: a backstop to the release of ended workflows above.
@app.schedule(Rate(1, unit=Rate.HOURS), name="slot_reconciler")
def slot_reconciler(event):
    """Hourly: release what workflows that no longer run still hold or wait for."""
    return services.slot_reconciler().run()


# Attempts that may be retried, once over, and retries waiting out their delay
# (chalicelib/executions/retries.py). Batch size 1 as the callback sender's, for the same reason.
@app.on_sqs_message(queue="RetryQueue", batch_size=1, name="execution_retry")
def execution_retry(event):
    """The retry queue: a failed attempt with retries left runs again, after the job's delay."""
    return each_message(event, lambda record: services.retries().handle(json.loads(record.body)))


# Runs whose TTL does not fit in a Lambda invocation (chalicelib/executions/placement.py): each
# message becomes a Fargate task of the worker image, which reports to the workflow as the Lambda
# worker does. Batch size 1 as above; a failed launch comes back after the visibility timeout.
@app.on_sqs_message(queue="FargateQueue", batch_size=1, name="fargate_launcher", maximum_concurrency=5)
def fargate_launcher(event):
    """The Fargate queue: each run message starts one Fargate task (partial failures reported)."""
    return each_message(event, lambda record: services.fargate_launcher().handle(
        record.body, int(record.attributes.approximate_receive_count or 1)))
