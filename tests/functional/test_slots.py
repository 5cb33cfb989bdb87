"""The slot keeper, its queue, the release of ended workflows and the reconciler, against moto's DynamoDB and SQS.

Step Functions is a recorder here: what matters is which TakeSlot task token the keeper ends, in
which order, with which output. The workflows themselves run in local mode's emulator (tests/e2e
test_queued_runs.py and test_execution_control.py).
"""
from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from app import slot_keeper
from chalicelib.executions.slots import (
    SlotKeeper, SlotMessage, SlotQueue, SlotReconciler, account_limit, release_ended_workflow,
)
from chalicelib.platform import aws
from chalicelib.platform.config import get_settings
from chalicelib.platform.models import Account, RunSlot
from localmode.queue_poller import lambda_event


class StepFunctions:
    """Records SendTaskSuccess; tokens in `over` answer as a task that is over; `running` names live workflows."""

    def __init__(self) -> None:
        self.told: list[tuple[str, bool]] = []
        self.over: set[str] = set()
        self.running: set[str] = set()

    def send_task_success(self, taskToken: str, output: str) -> None:  # noqa: N803 - boto3's names
        if taskToken in self.over:
            raise ClientError({"Error": {"Code": "TaskTimedOut", "Message": "over"}}, "SendTaskSuccess")
        self.told.append((taskToken, json.loads(output)["granted"]))

    def describe_execution(self, executionArn: str) -> dict:  # noqa: N803
        name = executionArn.rsplit(":", 1)[1]
        if name not in self.running and not name.startswith("known-"):
            raise ClientError({"Error": {"Code": "ExecutionDoesNotExist", "Message": "none"}}, "DescribeExecution")
        return {"status": "RUNNING" if name in self.running else "ABORTED"}

    def granted(self) -> list[str]:
        return [token for token, granted in self.told if granted]

    def refused(self) -> list[str]:
        return [token for token, granted in self.told if not granted]


@pytest.fixture
def sfn(aws_stack) -> StepFunctions:
    return StepFunctions()


def keeper(sfn: StepFunctions, limit: int = 2) -> SlotKeeper:
    return SlotKeeper(sfn, lambda account: limit)


def take(name: str, account: str = "DEMO", attempt: int = 1) -> SlotMessage:
    return SlotMessage("take", account, "job-1", name, attempt, f"token-{name}-{attempt}")


def leave(name: str, account: str = "DEMO", attempt: int = 1) -> SlotMessage:
    return SlotMessage("leave", account, "job-1", name, attempt)


def entries(account: str = "DEMO") -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"holder": [], "waiter": [], "ticket": []}
    for entry in RunSlot.query(account, consistent_read=True):
        kind = entry.entry.split("#", 1)[0]
        if kind in found:
            found[kind].append(entry.execution_id or entry.entry.split("#")[1])
    return found


def test_slots_go_first_in_first_out_and_a_release_hands_its_slot_to_the_oldest_waiter(sfn):
    slots = keeper(sfn, limit=2)
    for name in "abcdef":
        slots.handle(take(name))
    assert sfn.granted() == ["token-a-1", "token-b-1"]
    assert entries()["holder"] == ["a", "b"] and entries()["waiter"] == ["c", "d", "e", "f"]
    for name, handed_to in (("b", "c"), ("a", "d"), ("d", "e"), ("c", "f")):
        slots.handle(leave(name))
        assert sfn.granted()[-1] == f"token-{handed_to}-1"
    assert sfn.refused() == [] and entries()["waiter"] == []


def test_a_redelivered_take_or_leave_changes_nothing(sfn):
    slots = keeper(sfn, limit=1)
    for message in (take("a"), take("b"), take("a"), take("b"), take("c")):
        slots.handle(message)
    assert sfn.granted() == ["token-a-1"] and entries()["waiter"] == ["b", "c"]
    slots.handle(leave("a"))
    slots.handle(leave("a"))  # a second release of one slot must not free a second one
    assert sfn.granted() == ["token-a-1", "token-b-1"] and entries() == {"holder": ["b"], "waiter": ["c"],
                                                                         "ticket": ["c"]}


def test_a_waiter_that_leaves_is_refused_at_once_and_never_granted(sfn):
    slots = keeper(sfn, limit=1)
    for name in "abc":
        slots.handle(take(name))
    slots.handle(leave("b"))  # stopped, killed, or its TTL reached while waiting
    assert sfn.refused() == ["token-b-1"]
    slots.handle(leave("a"))
    assert sfn.granted() == ["token-a-1", "token-c-1"]


def test_a_waiter_whose_workflow_ended_is_passed_over(sfn):
    slots = keeper(sfn, limit=1)
    for name in "abc":
        slots.handle(take(name))
    sfn.over.add("token-b-1")  # b's workflow was aborted while it waited
    slots.handle(leave("a"))
    assert sfn.granted() == ["token-a-1", "token-c-1"] and entries()["holder"] == ["c"]


def test_a_grant_the_keeper_could_not_tell_is_told_on_the_next_message(sfn):
    slots = keeper(sfn, limit=1)
    slots.handle(take("a"))
    slots.handle(take("b"))
    # As if the keeper stopped between making b the holder and telling its task.
    RunSlot(  # the entry layout of chalicelib/executions/slots.py
        "DEMO", "holder#b#1", job_id="job-1", execution_id="b", attempt=1, task_token="token-b-1",
        granted=False).save()
    RunSlot("DEMO", "holder#a#1").delete()
    slots.handle(SlotMessage("fill", "DEMO"))
    assert sfn.granted() == ["token-a-1", "token-b-1"]


def test_one_accounts_queue_never_holds_up_another(sfn):
    slots = keeper(sfn, limit=1)
    for name in "abc":
        slots.handle(take(name, account="DEMO"))
    slots.handle(take("x", account="OTHER"))
    assert sfn.granted() == ["token-a-1", "token-x-1"]


def test_the_limit_is_the_accounts_own(sfn):
    Account("DEMO", created_time=0, max_concurrent=3).save()
    assert account_limit("DEMO", 4) == 3 and account_limit("NOBODY", 4) == 4


def test_a_bad_message_is_refused():
    for body in ('{"op": "grab", "accountAlias": "DEMO"}', '{"op": "take", "accountAlias": "DEMO", "jobId": "j", '
                 '"executionId": "e", "attempt": 1}', '{"op": "leave", "accountAlias": "DEMO"}', "[]"):
        with pytest.raises((ValueError, KeyError, TypeError, AttributeError)):
            SlotMessage.parse(body)


def received(queue_url: str) -> list[dict]:
    messages = aws.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                                 AttributeNames=["MessageGroupId"]).get("Messages", [])
    return [{**json.loads(message["Body"]), "group": message["Attributes"]["MessageGroupId"]} for message in messages]


def status_change(status: str, machine: str, data: dict | None) -> dict[str, Any]:
    return {"detail-type": "Step Functions Execution Status Change", "source": "aws.states",
            "detail": {"status": status, "stateMachineArn": machine, "executionArn": f"{machine}:e-1",
                       "input": json.dumps(data) if data is not None else None}}


def test_a_workflow_ended_without_its_release_gives_its_slot_back(aws_stack):
    settings = get_settings()
    queue = SlotQueue(aws.client("sqs"), settings.slot_queue_url)
    machine = settings.execution_state_machine_arn
    attempt = {"accountAlias": "DEMO", "jobId": "job-1", "executionId": "e", "attempt": 2}
    for status in ("FAILED", "TIMED_OUT", "ABORTED"):
        assert release_ended_workflow(status_change(status, machine, attempt), machine, queue)
    assert not release_ended_workflow(status_change("SUCCEEDED", machine, attempt), machine, queue)
    assert not release_ended_workflow(status_change("ABORTED", machine + "-other", attempt), machine, queue)
    assert not release_ended_workflow(status_change("ABORTED", machine, None), machine, queue)
    # One leave: the queue drops the same body sent again within five minutes (all three are idempotent).
    assert received(settings.slot_queue_url) == [{"op": "leave", "accountAlias": "DEMO", "jobId": "job-1",
                                                  "executionId": "e", "attempt": 2, "group": "DEMO"}]


def test_the_reconciler_releases_what_ended_workflows_hold_or_wait_for(sfn):
    slots = keeper(sfn, limit=1)
    for name in ("live", "gone", "waiting"):
        slots.handle(take(name))
    sfn.running |= {"live-1", "waiting-1"}
    settings = get_settings()
    outcome = SlotReconciler(sfn, settings.execution_state_machine_arn,
                             SlotQueue(aws.client("sqs"), settings.slot_queue_url)).run()
    assert outcome == {"released": 1, "filled": 1}
    messages = received(settings.slot_queue_url)
    assert [(message["op"], message.get("executionId")) for message in messages] == [("leave", "gone"), ("fill", None)]
    # Fed to the keeper, in order, through the function's FIFO batch handling.
    for message in messages:
        slots.handle(SlotMessage.parse(json.dumps({k: v for k, v in message.items() if k != "group"})))
    assert entries()["holder"] == ["live"] and entries()["waiter"] == ["waiting"]


def test_the_function_stops_a_batch_at_its_first_failure_and_reports_the_rest(aws_stack):
    settings = get_settings()
    bodies = ['{"op": "fill", "accountAlias": "DEMO"}', '{"op": "grab", "accountAlias": "DEMO"}',
              '{"op": "fill", "accountAlias": "DEMO", "nonce": "2"}']
    messages = [{"MessageId": f"m{index}", "ReceiptHandle": f"r{index}", "Body": body,
                 "Attributes": {"MessageGroupId": "DEMO"}} for index, body in enumerate(bodies)]

    class Context:
        function_name = "slot_keeper"
        aws_request_id = "local"

    answer = slot_keeper(lambda_event(messages, "arn:aws:sqs:us-east-1:123456789012:q.fifo", settings.region), Context())
    # The second is refused, and the third must not be decided before it: both come back.
    assert [item["itemIdentifier"] for item in answer["batchItemFailures"]] == ["m1", "m2"]
