"""Executions: start a job, read executions and their events, restart the unsuccessful ones."""
from __future__ import annotations

import itertools
import json
import logging
import time
import uuid
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, field
from typing import Any, Iterator

from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from chalicelib.platform import models
from chalicelib.executions import states
from chalicelib.executions.placement import FARGATE, compute_for
from chalicelib.executions.slots import SlotQueue
from chalicelib.executions.options import limit_hosts, parse_options
from chalicelib.executions.logtext import (
    Chunk, Segment, byte_length, cut, event_segments, event_text, outcome_line, running_segments,
)
from chalicelib.callbacks.notices import Notifier
from chalicelib.platform.config import Settings
from chalicelib.platform.errors import Conflict, InvalidRequest, NotFound
from chalicelib.jobs.service import JobService, now_ms
from chalicelib.jobs.spec import MAX_HOSTS, validate_host_id
from chalicelib.jobs.ssh_keys import decode_private_key
from chalicelib.platform.models import Execution, ExecutionEvent, JobExecutionCount
from chalicelib.platform.paging import MAX_RESPONSE_BYTES, Page, PageRequest, json_wire_size, wire_size
from chalicelib.platform.sealing import Opener, Sealer
from chalicelib.platform.storage import condition_failed, conflicted, failed_conditions, newest_first_page

logger = logging.getLogger("runner.executions")

DEFAULT_TTL_MINUTES = 180
MAX_EVENTS_PAGE = 1000
START_TRIES = 4  # a start's transaction may lose a race with another start of the same job
FIRST_LOG_PAGE = 16  # events read first for a log chunk; later reads are sized from these
HEADER_ALLOWANCE = 32  # an attempt's header line, counted on every event: never too few read
RUN_KEY_DEFAULT = "sshPrivateKey"


def run_key_path(host_id: str) -> str:
    """Secret path of a key given for one host at start or restart."""
    return f"hosts[{host_id}].sshPrivateKey"


@dataclass
class RunRequest:
    """The body of a start or restart: hosts to target, keys for this run only, the run's options."""

    hosts: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    options: dict = field(default_factory=dict)


def parse_run_request(body: Any) -> RunRequest:
    """Validate `{}` or `{"hosts": [{"id", "sshPrivateKey"}], "sshPrivateKey", options...}`
    (the options: chalicelib/executions/options.py)."""
    if body is None:
        return RunRequest()
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object (send {} to use the job's hosts)")
    request = RunRequest(options=parse_options(body))
    hosts = body.get("hosts")
    if hosts is not None:
        if not isinstance(hosts, list):
            raise InvalidRequest("hosts", "must be an array of host objects")
        if len(hosts) > MAX_HOSTS:
            raise InvalidRequest("hosts", f"must hold at most {MAX_HOSTS} hosts")
        seen: set[str] = set()
        for index, host in enumerate(hosts):
            where = f"hosts[{index}]"
            if isinstance(host, str):
                host = {"id": host}
            if not isinstance(host, dict):
                raise InvalidRequest(where, "must be an object with an id")
            host_id = validate_host_id(host.get("id"), f"{where}.id")
            if host_id in seen:
                raise InvalidRequest(f"{where}.id", f"duplicate host id {host_id!r}")
            seen.add(host_id)
            request.hosts.append(host_id)
            if host.get("sshPrivateKey") is not None:
                request.keys[run_key_path(host_id)] = decode_private_key(f"{where}.sshPrivateKey",
                                                                         host["sshPrivateKey"])
    if body.get("sshPrivateKey") is not None:
        request.keys[RUN_KEY_DEFAULT] = decode_private_key("sshPrivateKey", body["sshPrivateKey"])
    return request


def _events_for_chunk(execution_id: str, low: int, high: int) -> Iterator[ExecutionEvent]:
    """Events `low`..`high` in seq order, each read asking for about as many events as a chunk
    still has room for (judged from the sizes seen so far): a chunk reads the events it holds,
    and not many more."""
    query = ExecutionEvent.query(execution_id, ExecutionEvent.seq.between(low, high), page_size=FIRST_LOG_PAGE,
                                 consistent_read=True)
    spent = count = 0
    for event in query:
        count += 1
        spent += wire_size(event_text(event.stdout)) + HEADER_ALLOWANCE
        room = MAX_RESPONSE_BYTES - spent
        query.page_iter.page_size = max(1, min(MAX_EVENTS_PAGE, room // max(1, spent // count) + 1))  # the next read
        yield event


def _check_offset(offset: int, total: int) -> None:
    """An offset at the end answers an empty chunk; past it, a 400."""
    if offset > total:
        raise InvalidRequest("offset", f"is beyond the end of the log ({total} bytes now)")


def render_execution(execution: Execution) -> dict:
    """The execution as the API answers it (the reference's snake_case document)."""
    timers = [{"start": _int(timer.start), "end": _int(timer.end)} for timer in execution.timers or []]
    final = execution.status in states.FINAL
    document = {
        "execution_id": execution.execution_id,
        "job_id": execution.job_id,
        "account_alias": execution.account_alias,
        "status": execution.status,
        "status_reason": execution.status_reason,
        "timers": timers,
        "start": timers[0]["start"] if timers else None,
        "end": timers[-1]["end"] if timers and final else None,
        "repository_log": json.loads(execution.repository_log) if execution.repository_log else None,
        "failed_hosts": list(execution.failed_hosts or []),
        "is_vpn_established": False,
        "attempt": int(execution.attempt),
        "hosts": list(execution.target_hosts or []),
        "started_by": execution.started_by,
        "scheduled_time": _int(execution.scheduled_time),
        "created_time": int(execution.created_time),
        "options": json.loads(execution.options) if execution.options else {},
        "retry": render_retry(execution),
        "compute": execution.compute,
    }
    return document


def render_retry(execution: Execution) -> dict | None:
    """The retry policy the execution started with, the retries made, and when the next is due."""
    if not execution.retry_policy:
        return None
    waiting = execution.status == states.PENDING and execution.retry_at is not None
    return {**json.loads(execution.retry_policy), "retries": int(execution.retries or 0),
            "nextRetryTime": int(execution.retry_at) if waiting else None}


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def render_event(event: ExecutionEvent) -> dict:
    """One ansible-runner event as the events route answers it."""
    return {
        "seq": int(event.seq),
        "attempt": int(event.attempt),
        "event": event.event,
        "host": event.host,
        "task": event.task,
        "stdout": event.stdout or "",
        "created": event.created,
        "event_data": json.loads(event.data) if event.data else {},
    }


class ExecutionService:
    """Starts executions through Step Functions and answers their state."""

    def __init__(self, jobs: JobService, kms: Any, stepfunctions: Any, settings: Settings,
                 notifier: Notifier | None = None, slots: SlotQueue | None = None) -> None:
        self._jobs = jobs
        self._kms = kms
        self._sfn = stepfunctions
        self._settings = settings
        self._notifier = notifier
        self._slots = slots

    def _notify(self, execution: Execution, status: str) -> None:
        if self._notifier is not None:
            self._notifier.status_changed(execution, status)

    # --- reads ------------------------------------------------------------------------------

    def _load(self, account: str, job_id: str, execution_id: str) -> Execution:
        models.bind()
        try:
            execution = Execution.get(job_id, execution_id, consistent_read=True)
        except DoesNotExist:
            execution = None
        if execution is None or execution.account_alias != account:
            raise NotFound(f"execution {execution_id} of job {job_id} not found in account {account}")
        return execution

    def get(self, account: str, job_id: str, execution_id: str) -> dict:
        """One execution."""
        return render_execution(self._load(account, job_id, execution_id))

    def list(self, account: str, job_id: str, request: PageRequest) -> Page:
        """A page of a job's executions, newest first, with the exact total (the job's count)."""
        job = self._jobs.load(account, job_id)  # 404 for a job of another account or none
        total = self._jobs.execution_count(job)
        executions, cursor = newest_first_page(
            Execution.by_created_time, job_id, ("jobId", "executionId"), request, total,
            lambda execution: (execution.execution_id, int(execution.created_time)))
        results = [render_execution(execution) for execution in executions]
        return Page({"totalSize": total, "page": request.page, "size": len(results), "results": results}, cursor)

    def events(self, account: str, job_id: str, execution_id: str, after: int, size: int) -> dict:
        """The execution's events with seq > after, in order: at most `size`, and fewer when the
        next one would take the answer past MAX_RESPONSE_BYTES (`next` then says where to go on)."""
        self._load(account, job_id, execution_id)
        query = ExecutionEvent.query(execution_id, ExecutionEvent.seq > after, limit=size,
                                     page_size=min(size, MAX_EVENTS_PAGE), consistent_read=True)
        # The envelope, with the widest `next` it can carry; each event adds itself and a comma.
        spent = json_wire_size({"execution_id": execution_id, "after": after, "size": size, "next": 2**53,
                                "results": []})
        results: list[dict] = []
        cut_short = False
        for event in query:
            rendered = render_event(event)
            cost = json_wire_size(rendered) + 1
            if results and spent + cost > MAX_RESPONSE_BYTES:
                cut_short = True  # a stored event (at most 400 KB) always fits in an empty page
                break
            results.append(rendered)
            spent += cost
        more = len(results) == size or cut_short
        return {"execution_id": execution_id, "after": after, "size": len(results),
                "next": results[-1]["seq"] if results and more else None, "results": results}

    def log(self, account: str, job_id: str, execution_id: str, offset: int = 0) -> Chunk:
        """The plain-text output of every attempt, in order, ending with the outcome: from byte
        `offset` on, at most MAX_RESPONSE_BYTES of it (the chunk says where the next one starts).

        Reads the events the chunk holds, and finds the first of them with a few one-item queries
        on the offsets the worker stored (chalicelib/executions/logtext.py).
        """
        execution = self._load(account, job_id, execution_id)
        outcome = outcome_line(execution.status, int(execution.attempt), execution.status_reason)
        last = self._edge_event(execution_id, newest=True)
        if last is not None and last.log_offset is None:
            return self._log_without_offsets(execution_id, outcome, offset)
        end = 0 if last is None else int(last.log_offset) + byte_length(event_text(last.stdout))
        _check_offset(offset, end + byte_length(outcome))
        tail = [Segment(end, outcome)]
        if offset >= end:
            return cut(tail, offset, MAX_RESPONSE_BYTES)
        first = self._event_at(execution_id, offset, last)
        # Events written after `last` was read belong to the next chunk: they would come after the outcome.
        events = _events_for_chunk(execution_id, int(first.seq), int(last.seq))
        # The header of an attempt lies before its first event's offset: answer it only when asked.
        previous = first.attempt if first.log_offset is not None and int(first.log_offset) <= offset else None
        return cut(itertools.chain(event_segments(events, previous), tail), offset, MAX_RESPONSE_BYTES)

    @staticmethod
    def _edge_event(execution_id: str, newest: bool, seq_at_most: int | None = None) -> ExecutionEvent | None:
        """The first or last event (the last at or before `seq_at_most`), in one one-item query."""
        condition = None if seq_at_most is None else ExecutionEvent.seq <= seq_at_most
        for event in ExecutionEvent.query(execution_id, condition, scan_index_forward=not newest, limit=1,
                                          consistent_read=True):
            return event
        return None

    def _event_at(self, execution_id: str, offset: int, last: ExecutionEvent) -> ExecutionEvent:
        """The last event whose stdout starts at or before `offset` (else the first event).

        A bisection over seq: stored offsets grow with seq, and each step is a one-item query,
        so finding it costs about log2(seq range) small reads whatever the offset.
        """
        if int(last.log_offset) <= offset:
            return last
        first = self._edge_event(execution_id, newest=False)
        if first.log_offset is None or int(first.log_offset) > offset:
            return first
        best, low, high = first, int(first.seq), int(last.seq)
        while high - low > 1:
            middle = (low + high) // 2
            event = self._edge_event(execution_id, newest=True, seq_at_most=middle)
            if event.log_offset is not None and int(event.log_offset) <= offset:
                best, low = event, middle
            else:
                high = int(event.seq)
        return best

    @staticmethod
    def _log_without_offsets(execution_id: str, outcome: str, offset: int) -> Chunk:
        """The log of an execution whose events carry no offsets (written before they were kept):
        positions are counted from the first event, so every event before the chunk is read."""
        end = [0]

        def segments():
            for segment in running_segments(ExecutionEvent.query(execution_id, consistent_read=True)):
                end[0] = segment.start + byte_length(segment.text)
                yield segment
            yield Segment(end[0], outcome)
            end[0] += byte_length(outcome)

        chunk = cut(segments(), offset, MAX_RESPONSE_BYTES)
        if chunk.next_offset is None:
            _check_offset(offset, end[0])
        return chunk

    # --- writes -----------------------------------------------------------------------------

    def _seal_keys(self, account: str, job_id: str, execution_id: str, keys: dict[str, str]) -> str | None:
        if not keys:
            return None
        sealer = Sealer(self._kms, self._settings.kms_key_id,
                        {"accountAlias": account, "jobId": job_id, "executionId": execution_id})
        return json.dumps({path: sealer.seal(f"{account}/{job_id}/{execution_id}/{path}", value)
                           for path, value in keys.items()}, sort_keys=True)

    def open_keys(self, execution: Execution) -> dict[str, str]:
        """The keys given at start or restart, in clear (for the worker only)."""
        if not execution.sealed_keys:
            return {}
        context = {"accountAlias": execution.account_alias, "jobId": execution.job_id,
                   "executionId": execution.execution_id}
        opener = Opener(self._kms, context)
        prefix = f"{execution.account_alias}/{execution.job_id}/{execution.execution_id}"
        return {path: opener.open(f"{prefix}/{path}", envelope)
                for path, envelope in json.loads(execution.sealed_keys).items()}

    def start(self, account: str, job_id: str, body: Any, started_by: str | None,
              execution_id: str | None = None, scheduled_time: int | None = None) -> dict:
        """Create an execution of the job and dispatch its first attempt.

        A schedule passes the `execution_id` it derives from its fire time: a second start with
        the same id raises DuplicateExecution, so a fire delivered twice runs once.
        """
        request = parse_run_request(body)
        job = self._jobs.load(account, job_id)
        spec = json.loads(job.spec)
        hosts = request.hosts or [host["id"] for host in spec["hosts"]]
        if "limit" in request.options:
            hosts = limit_hosts(request.options["limit"], hosts)
        retry = spec.get("retry")
        chosen = execution_id is not None
        execution_id = execution_id or str(uuid.uuid4())
        now = now_ms()
        execution = Execution(
            job_id, execution_id, account_alias=account, created_time=now, status=states.PENDING,
            attempt=1, timers=[], target_hosts=hosts, failed_hosts=[], started_by=started_by,
            scheduled_time=scheduled_time, callbacks=json.dumps(spec["callbacks"]) if spec.get("callbacks") else None,
            sealed_keys=self._seal_keys(account, job_id, execution_id, request.keys), updated_time=now,
            log_start=0, options=json.dumps(request.options, sort_keys=True) if request.options else None,
            retry_policy=json.dumps(retry, sort_keys=True) if retry else None, retries=0 if retry else None,
            compute=self._compute(spec.get("executionTtl")))
        self._jobs.execution_count(job)  # a job stored before counts were kept is counted first
        self._put_counted(execution, account, chosen)
        self._notify(execution, states.PENDING)
        self._dispatch(execution, spec.get("executionTtl"))
        return render_execution(execution)

    @staticmethod
    def _put_counted(execution: Execution, account: str, chosen: bool) -> None:
        """Store a new execution and count it in its job's item, in one transaction."""
        for attempt in range(START_TRIES):
            try:
                with TransactWrite(connection=models.connection()) as transaction:
                    transaction.save(execution, condition=Execution.execution_id.does_not_exist())
                    transaction.update(JobExecutionCount(account, execution.job_id),
                                       actions=[JobExecutionCount.execution_count.add(1)],
                                       condition=JobExecutionCount.execution_count.exists())
                return
            except TransactWriteError as exc:
                failed = failed_conditions(exc)
                if 0 in failed:
                    if chosen:
                        raise DuplicateExecution(f"execution {execution.execution_id} exists already") from exc
                    raise Conflict("execution id collision; retry") from exc
                if 1 in failed:  # the count exists on every job item: no job item any more
                    raise NotFound(f"job {execution.job_id} not found in account {account}") from exc
                if not conflicted(exc) or attempt == START_TRIES - 1:
                    raise
                time.sleep(0.01 * 2 ** attempt)  # another start of the job was writing its count

    def restart(self, account: str, job_id: str, execution_id: str, body: Any) -> dict:
        """Run an ended, unsuccessful execution again on its failed hosts (or the body's).

        Options given replace the previous attempt's, one by one; a `limit` applies to the hosts
        the restart runs on.
        """
        request = parse_run_request(body)
        execution = self._load(account, job_id, execution_id)
        if not states.RESTART.accepts(execution.status):
            raise Conflict(states.RESTART.refused(execution_id, execution.status))
        job = self._jobs.load(account, job_id)
        hosts = request.hosts or list(execution.failed_hosts or []) or list(execution.target_hosts or [])
        if "limit" in request.options:
            hosts = limit_hosts(request.options["limit"], hosts)
        # The job's TTL may have changed since: the new attempt runs where its TTL says.
        extra = [Execution.retry_at.remove(),
                 Execution.compute.set(self._compute(json.loads(job.spec).get("executionTtl")))]
        if request.options:
            options = {**(json.loads(execution.options) if execution.options else {}), **request.options}
            extra.append(Execution.options.set(json.dumps(options, sort_keys=True)))
        if request.keys:
            extra.append(Execution.sealed_keys.set(self._seal_keys(account, job_id, execution_id, request.keys)))
        try:
            self._next_attempt(execution, hosts, None, extra)
        except StatusRaced as exc:
            raise Conflict(f"execution {execution_id} changed while restarting it; read it again") from exc
        self._dispatch(execution, json.loads(job.spec).get("executionTtl"))
        return render_execution(execution)

    def _next_attempt(self, execution: Execution, hosts: list[str], reason: str | None, extra: list) -> None:
        """An ended attempt's execution becomes PENDING as its next attempt (what every restart
        writes, conditional on the attempt and its status), and says so to its callbacks."""
        attempt = int(execution.attempt) + 1
        actions = [Execution.status.set(states.PENDING), Execution.attempt.set(attempt),
                   Execution.target_hosts.set(hosts), Execution.failed_hosts.set([]),
                   Execution.status_reason.set(reason) if reason else Execution.status_reason.remove(),
                   Execution.run_token.remove(), Execution.updated_time.set(now_ms()), *extra]
        log_start = self._log_end(execution.execution_id)
        actions.append(Execution.log_start.set(log_start) if log_start is not None else Execution.log_start.remove())
        try:
            execution.update(actions=actions, condition=states.transition_condition(
                Execution, states.PENDING, attempt=attempt - 1))
        except UpdateError as exc:
            if condition_failed(exc):
                raise StatusRaced(f"execution {execution.execution_id} changed while restarting it") from exc
            raise
        self._notify(execution, states.PENDING)

    def retry(self, execution: Execution, hosts: list[str], reason: str, retry_at: int,
              ttl_minutes: int | None) -> None:
        """Begin an automatic retry: the next attempt, as a restart would, waiting PENDING until
        `retry_at` (its workflow starts then, through dispatch_retry); its TTL counts from now.

        Raises StatusRaced when the execution moved on meanwhile (a duplicate, a restart).
        """
        self._next_attempt(execution, hosts, reason, [Execution.retries.add(1), Execution.retry_at.set(retry_at),
                                                      Execution.compute.set(self._compute(ttl_minutes))])
        self._start_ttl(execution, ttl_minutes)

    def dispatch_retry(self, execution: Execution, ttl_minutes: int | None) -> bool:
        """Start the workflow of a retry whose delay is over; False when it was started already."""
        return self._start_workflow(execution, ttl_minutes)

    def _log_end(self, execution_id: str) -> int | None:
        """Where the log's events end now, in bytes (where a new attempt's text starts); None when
        the events carry no offsets."""
        last = self._edge_event(execution_id, newest=True)
        if last is None:
            return 0
        if last.log_offset is None:
            return None
        return int(last.log_offset) + byte_length(event_text(last.stdout))

    def _compute(self, ttl_minutes: int | None) -> str:
        """Where an attempt with this TTL runs (chalicelib/executions/placement.py)."""
        return compute_for((ttl_minutes or DEFAULT_TTL_MINUTES) * self._settings.ttl_minute_seconds, self._settings)

    def _placement(self, execution: Execution, ttl_minutes: int | None) -> str:
        """Where the current attempt runs: as recorded on it, else as its TTL says."""
        return execution.compute or self._compute(ttl_minutes)

    def _dispatch(self, execution: Execution, ttl_minutes: int | None) -> None:
        """Start the workflow of the execution's current attempt, and the one enforcing its TTL."""
        if self._start_workflow(execution, ttl_minutes):
            self._start_ttl(execution, ttl_minutes)

    def _common_input(self, execution: Execution) -> dict:
        attempt = int(execution.attempt)
        return {
            "accountAlias": execution.account_alias,
            "jobId": execution.job_id,
            "executionId": execution.execution_id,
            "attempt": attempt,
            "attemptText": str(attempt),
            "executionsTable": self._settings.table("ExecutionsTable"),
            "callbackQueueUrl": self._settings.callback_queue_url,
            "slotQueueUrl": self._settings.slot_queue_url,
        }

    def _ttl_seconds(self, ttl_minutes: int | None) -> int:
        return (ttl_minutes or DEFAULT_TTL_MINUTES) * self._settings.ttl_minute_seconds

    def _start_workflow(self, execution: Execution, ttl_minutes: int | None) -> bool:
        """Start the execution workflow of the current attempt; False when it exists already."""
        settings = self._settings
        ttl_seconds = self._ttl_seconds(ttl_minutes)
        policy = json.loads(execution.retry_policy) if execution.retry_policy else None
        workflow_input = dict(
            self._common_input(execution),
            queueUrl=settings.fargate_queue_url if self._placement(execution, ttl_minutes) == FARGATE
            else settings.run_queue_url,
            handoffQueueUrl=settings.handoff_queue_url,
            heartbeatSeconds=settings.heartbeat_seconds,
            # A bound on each wait (in the run queue, then for the run); the TTL itself is enforced
            # (gracefully) by the control workflow.
            runTimeoutSeconds=ttl_seconds + settings.ttl_grace_seconds + settings.kill_window_seconds + 120,
            # The workflow's last state tells chalicelib/executions/retries.py that the attempt
            # is over when a FAILURE could still be retried.
            retryQueueUrl=settings.retry_queue_url,
            retrying=bool(policy) and int(execution.retries or 0) < int(policy["attempts"]))
        try:
            self._sfn.start_execution(stateMachineArn=settings.execution_state_machine_arn,
                                      name=f"{execution.execution_id}-{int(execution.attempt)}",
                                      input=json.dumps(workflow_input))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                self._undispatchable(execution)
                raise
            return False  # dispatched by a concurrent request: the name makes a second start impossible
        except Exception:
            self._undispatchable(execution)
            raise
        return True

    def _start_ttl(self, execution: Execution, ttl_minutes: int | None) -> None:
        """Start the control workflow that stops the current attempt when its time-to-live is over."""
        settings = self._settings
        ttl_minutes = ttl_minutes or DEFAULT_TTL_MINUTES
        deadline = datetime.now(timezone.utc) + timedelta(seconds=self._ttl_seconds(ttl_minutes))
        ttl_input = dict(
            self._common_input(execution), action="ttl", ttlMinutes=ttl_minutes,
            deadline=deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
            graceSeconds=settings.ttl_grace_seconds, killWindowSeconds=settings.kill_window_seconds,
            escalationReason=f"time-to-live of {ttl_minutes} min reached; not stopped within "
                             f"{settings.ttl_grace_seconds} s, killed")
        self._control(execution, ttl_input, "ttl")

    def _undispatchable(self, execution: Execution) -> None:
        logger.exception("could not dispatch execution %s attempt %d", execution.execution_id, int(execution.attempt))
        execution.update(actions=[Execution.status.set(states.FAILURE),
                                  Execution.status_reason.set("could not be dispatched to a worker"),
                                  Execution.updated_time.set(now_ms())],
                         condition=Execution.status == states.PENDING)

    def ensure_dispatched(self, account: str, job_id: str, execution_id: str) -> bool:
        """Dispatch a first attempt left PENDING with no workflow (its starter died in between).

        True when this call dispatched it. Used by the schedule trigger on a repeated fire.
        """
        execution = self._load(account, job_id, execution_id)
        if execution.status != states.PENDING or int(execution.attempt) != 1:
            return False
        arn = self._settings.execution_state_machine_arn.replace(":stateMachine:", ":execution:", 1)
        try:
            self._sfn.describe_execution(executionArn=f"{arn}:{execution_id}-1")
            return False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionDoesNotExist":
                raise
        self._dispatch(execution, json.loads(self._jobs.load(account, job_id).spec).get("executionTtl"))
        return True


    def _control(self, execution: Execution, control_input: dict, action: str) -> None:
        """Start a control workflow (expiry, escalation, TTL) for the execution's attempt."""
        name = f"{execution.execution_id}-{int(execution.attempt)}-{action}-{uuid.uuid4().hex[:8]}"
        self._sfn.start_execution(stateMachineArn=self._settings.control_state_machine_arn, name=name,
                                  input=json.dumps(control_input))

    # --- stop and kill ------------------------------------------------------------------------

    def stop(self, account: str, job_id: str, execution_id: str, body: Any, by: str | None) -> dict:
        """Stop gracefully: the running task ends, no other starts; escalated to a kill after N s."""
        expiry = parse_expiry(body)
        return self._retrying(lambda: self._stop(self._load(account, job_id, execution_id), expiry, by))

    def kill(self, account: str, job_id: str, execution_id: str, body: Any, by: str | None) -> dict:
        """Kill now; unconfirmed by the worker within N s (0: 30 s), recorded KILLED all the same."""
        expiry = parse_expiry(body)
        return self._retrying(lambda: self._kill(self._load(account, job_id, execution_id), expiry, by))

    @staticmethod
    def _retrying(action):
        # The status may change between our read and our conditional write (a worker claiming
        # it, finishing it): decide again on the new status.
        for _ in range(4):
            try:
                return action()
            except StatusRaced:
                continue
        return action()

    def _stop(self, execution: Execution, expiry: int, by: str | None) -> dict:
        execution_id = execution.execution_id
        if not states.STOP.accepts(execution.status):
            raise Conflict(states.STOP.refused(execution_id, execution.status))
        reason = f"stopped by {by or 'a user'}"
        if execution.status == states.PENDING:
            return self._end_pending(execution, states.STOPPED, f"{reason} before it started")
        if execution.status == states.STOPPING:
            return render_execution(execution)
        self._move(execution, states.STOPPING, reason)
        if expiry > 0:
            self._control(execution, self._control_input(execution, "stop", expiry,
                          f"{reason}; not stopped within {expiry} s, killed"), "stop")
        return render_execution(execution)

    def _kill(self, execution: Execution, expiry: int, by: str | None) -> dict:
        execution_id = execution.execution_id
        if not states.KILL.accepts(execution.status):
            raise Conflict(states.KILL.refused(execution_id, execution.status))
        reason = f"killed by {by or 'a user'}"
        if execution.status == states.PENDING:
            return self._end_pending(execution, states.KILLED, f"{reason} before it started")
        if execution.status == states.KILLING:
            return render_execution(execution)
        self._move(execution, states.KILLING, reason)
        self._control(execution, self._control_input(execution, "kill", expiry or self._settings.kill_window_seconds,
                                                     reason), "kill")
        return render_execution(execution)

    def _control_input(self, execution: Execution, action: str, seconds: int, escalation: str) -> dict:
        return {"jobId": execution.job_id, "executionId": execution.execution_id,
                "attempt": int(execution.attempt), "executionsTable": self._settings.table("ExecutionsTable"),
                "callbackQueueUrl": self._settings.callback_queue_url,
                "action": action, "expirySeconds": seconds if action == "stop" else 0,
                "killWindowSeconds": seconds if action == "kill" else self._settings.kill_window_seconds,
                "escalationReason": escalation}

    def _move(self, execution: Execution, target: str, reason: str) -> None:
        """A conditional status change; a concurrent one that got there first makes this a 409."""
        try:
            execution.update(actions=[Execution.status.set(target), Execution.status_reason.set(reason),
                                      Execution.updated_time.set(now_ms())],
                             condition=states.transition_condition(Execution, target, attempt=int(execution.attempt)))
        except UpdateError as exc:
            if condition_failed(exc):
                raise StatusRaced(f"execution {execution.execution_id} changed while becoming {target}") from exc
            raise
        self._notify(execution, target)

    def _end_pending(self, execution: Execution, target: str, reason: str) -> dict:
        """A PENDING execution ends without running anything.

        It leaves its account's run slots at once: a waiter's workflow ends, a slot granted to it
        goes to the next waiter (a run message already queued finds it ended).
        """
        self._move(execution, target, reason)
        if self._slots is not None:
            self._slots.leave(execution.account_alias, execution.job_id, execution.execution_id,
                              int(execution.attempt))
        return render_execution(execution)


class DuplicateExecution(Conflict):
    """An execution with the chosen id exists already (a schedule's fire delivered twice)."""


class StatusRaced(Conflict):
    """The execution's status changed between our read and our conditional write."""


def parse_expiry(body: Any) -> int:
    """`expiryDuration` of a stop or kill body: whole seconds, 0 by default."""
    if body is None:
        return 0
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object such as {\"expiryDuration\": 5}")
    value = body.get("expiryDuration", 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise InvalidRequest("expiryDuration", "must be a whole number of seconds, 0 or more")
    if value > 86400:
        raise InvalidRequest("expiryDuration", "must be at most 86400 seconds")
    return int(value)
