"""The Jobs resource: create, read, replace, delete and list job definitions of an account."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable

from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from chalicelib.platform import models
from chalicelib.platform.config import RepositoryRules, WebhookRules
from chalicelib.platform.errors import Conflict, InvalidRequest, NotFound
from chalicelib.jobs.spec import JobInput, parse_job, render_secret_masks
from chalicelib.platform.models import Account, Execution, Job, JobExecutionCount
from chalicelib.platform.paging import Page, PageRequest
from chalicelib.platform.sealing import MASK, Opener, Sealer
from chalicelib.platform.storage import condition_failed, failed_conditions, newest_first_page


def now_ms() -> int:
    """Epoch milliseconds, the API's time unit."""
    return int(time.time() * 1000)


def job_links(account: str, job_id: str) -> list[dict]:
    """Links to the job and what hangs off it."""
    base = f"/jobs/{account}/{job_id}"
    return [{"ref": "self", "id": job_id, "href": base, "verbs": ["GET", "PUT", "DELETE"]}]


def render_job(job: Job) -> dict:
    """The job as the API answers it: secrets masked, times in epoch ms."""
    spec = json.loads(job.spec)
    sealed = json.loads(job.sealed) if job.sealed else {}
    shown = render_secret_masks(spec, set(sealed))
    document: dict[str, Any] = {"id": job.job_id, "accountAlias": job.account_alias}
    for key in ("description", "executionTtl", "repository", "playbookTags", "hosts", "properties",
                "callbacks", "useDynamicInventory", "retry", "sshPrivateKey"):
        if key in shown:
            document[key] = shown[key]
    document.update({
        "status": "ACTIVE",
        "createdTime": int(job.created_time),
        "lastUpdatedTime": int(job.last_updated_time),
        "links": job_links(job.account_alias, job.job_id),
    })
    return document


class JobService:
    """Job definitions of accounts, stored in DynamoDB with their secrets sealed by KMS."""

    def __init__(self, kms: Any, key_id: str, repositories: RepositoryRules, webhooks: WebhookRules) -> None:
        self._kms = kms
        self._key_id = key_id
        self._repositories = repositories
        self._webhooks = webhooks

    @staticmethod
    def _context(account: str, job_id: str) -> dict[str, str]:
        return {"accountAlias": account, "jobId": job_id}

    def _seal(self, account: str, job_id: str, job_input: JobInput, stored: dict) -> str | None:
        sealer = Sealer(self._kms, self._key_id, self._context(account, job_id))
        sealed: dict[str, dict] = {}
        for path, value in job_input.secrets.items():
            if value == MASK:
                if path not in stored:
                    raise InvalidRequest(path, f"is {MASK!r} but no secret is stored there to keep; send the value")
                sealed[path] = stored[path]
            else:
                sealed[path] = sealer.seal(f"{account}/{job_id}/{path}", value)
        return json.dumps(sealed, sort_keys=True) if sealed else None

    def load(self, account: str, job_id: str) -> Job:
        """The stored job item (NotFound when absent)."""
        models.bind()
        try:
            return Job.get(account, job_id, consistent_read=True)
        except DoesNotExist as exc:
            raise NotFound(f"job {job_id} not found in account {account}") from exc

    def create(self, account: str, body: Any) -> dict:
        """Validate and store a new job; the account's job count moves in the same transaction."""
        job_input = parse_job(body, self._repositories, self._webhooks)
        models.bind()
        job_id = str(uuid.uuid4())
        now = now_ms()
        job = Job(account, job_id, created_time=now, last_updated_time=now, execution_count=0,
                  spec=json.dumps(job_input.spec), sealed=self._seal(account, job_id, job_input, {}))
        try:
            with TransactWrite(connection=models.connection()) as transaction:
                transaction.save(job, condition=Job.job_id.does_not_exist())
                transaction.update(Account(account), actions=[Account.job_count.add(1)],
                                   condition=Account.account_alias.exists())
        except TransactWriteError as exc:
            if 1 in failed_conditions(exc):  # the account's count: no such account
                raise NotFound(f"account {account} does not exist") from exc
            raise
        return render_job(job)

    def get(self, account: str, job_id: str) -> dict:
        """One job, in one GetItem."""
        models.bind()
        return render_job(self.load(account, job_id))

    def update(self, account: str, job_id: str, body: Any) -> dict:
        """Replace a job's definition in one conditional write; a lost race is a 409.

        A body that keeps a stored secret ("********") is the one case that must read first: the
        write is then conditional on the version read, so a concurrent change makes it a 409
        rather than silently mixing two definitions.
        """
        job_input = parse_job(body, self._repositories, self._webhooks)
        models.bind()
        stored: dict = {}
        expected_version = None
        if MASK in job_input.secrets.values():
            current = self.load(account, job_id)
            stored = json.loads(current.sealed) if current.sealed else {}
            expected_version = current.version
        sealed = self._seal(account, job_id, job_input, stored)
        job = Job(account, job_id)
        job.version = expected_version or 0  # PynamoDB then increments instead of resetting to 1
        condition = Job.job_id.exists()
        if expected_version is not None:
            condition &= Job.version == expected_version
        actions = [Job.spec.set(json.dumps(job_input.spec)), Job.last_updated_time.set(now_ms()),
                   Job.sealed.set(sealed) if sealed else Job.sealed.remove()]
        try:
            job.update(actions=actions, condition=condition, add_version_condition=False)
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
            if expected_version is None:
                raise NotFound(f"job {job_id} not found in account {account}") from exc
            raise Conflict(f"job {job_id} was changed or deleted by another request; read it again") from exc
        return render_job(job)

    def delete(self, account: str, job_id: str, also: Callable[[TransactWrite], None] | None = None) -> None:
        """Delete a job and count it out of its account, in one transaction.

        `also` adds the deletion of what hangs off the job (its schedules) to the same transaction.
        """
        models.bind()
        try:
            with TransactWrite(connection=models.connection()) as transaction:
                transaction.delete(Job(account, job_id), condition=Job.job_id.exists(),
                                   add_version_condition=False)
                transaction.update(Account(account), actions=[Account.job_count.add(-1)],
                                   condition=Account.account_alias.exists())
                if also is not None:
                    also(transaction)
        except TransactWriteError as exc:
            if 0 in failed_conditions(exc):  # the job's own delete: no such job
                raise NotFound(f"job {job_id} not found in account {account}") from exc
            raise

    def list(self, account: str, request: PageRequest) -> Page:
        """A page of the account's jobs, newest first, with the exact total (the account's count)."""
        models.bind()
        try:
            total = int(Account.get(account, attributes_to_get=["jobCount"]).job_count or 0)
        except DoesNotExist:
            total = 0
        jobs, cursor = newest_first_page(Job.by_created_time, account, ("accountAlias", "jobId"), request, total,
                                         lambda job: (job.job_id, int(job.created_time)))
        results = [render_job(job) for job in jobs]
        return Page({"totalSize": total, "page": request.page, "size": len(results), "results": results}, cursor)

    def execution_count(self, job: Job) -> int:
        """How many executions the job has: its kept count, or (a job stored before counts were
        kept) its executions counted once, then kept."""
        if job.execution_count is not None:
            return int(job.execution_count)
        # No start can add an execution meanwhile: its transaction needs the count to exist.
        counted = Execution.by_created_time.count(job.job_id, consistent_read=True)
        try:
            JobExecutionCount(job.account_alias, job.job_id).update(
                actions=[JobExecutionCount.execution_count.set(counted)],
                condition=JobExecutionCount.job_id.exists() & JobExecutionCount.execution_count.does_not_exist())
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
            return int(self.load(job.account_alias, job.job_id).execution_count or 0)  # counted by another request
        job.execution_count = counted
        return counted

    def open_secrets(self, account: str, job_id: str) -> dict[str, str]:
        """The job's secrets in clear, for the worker only (never for an API answer)."""
        models.bind()
        job = self.load(account, job_id)
        sealed = json.loads(job.sealed) if job.sealed else {}
        opener = Opener(self._kms, self._context(account, job_id))
        return {path: opener.open(f"{account}/{job_id}/{path}", envelope) for path, envelope in sealed.items()}
