"""A local worker: polls the run queue and hands each message to the Lambda handler, as Lambda would."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field

from chalicelib.platform import aws
from chalicelib.platform.config import get_settings
from localmode import invocations
from localmode.queue_poller import POLL_WAIT_SECONDS, lambda_event

logger = logging.getLogger("runner.local.worker")


@dataclass
class LocalLambdaContext:
    """The parts of Lambda's context object the handler and Powertools read."""

    function_name: str = "runner-worker"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:runner-worker"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # Lambda's timeout: RUNNER_LAMBDA_TIMEOUT_SECONDS, 900 as the template's Worker.
    deadline: float = field(default_factory=lambda: time.time() + get_settings().lambda_timeout_seconds)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))


def poll_forever(stop: list) -> None:
    """Receive one message at a time and run it, until `stop` is non-empty."""
    from runner_lambda.handler import handler

    settings = get_settings()
    sqs = aws.client("sqs")
    queue_url = settings.run_queue_url
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # Local mode names itself: a worker started just as local mode died would otherwise take its
    # new parent (init) for local mode and poll forever.
    parent = int(os.environ.get("RUNNER_PARENT_PID") or os.getppid())
    sandboxed = os.environ.get("RUNNER_SANDBOXED") == "1"
    while not stop:
        # In a sandbox the worker is PID 1 (its parent is outside the namespace): the kernel ends
        # it with the sandbox, which dies with local mode.
        if not sandboxed and os.getppid() != parent:
            logger.warning("local mode is gone; worker %d exits", os.getpid())
            return
        try:
            answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=POLL_WAIT_SECONDS,
                                         AttributeNames=["All"])
        except Exception:  # noqa: BLE001 - the emulator may be going away; try again shortly
            logger.exception("receive failed")
            time.sleep(1)
            continue
        for message in answer.get("Messages", []):
            try:
                with invocations.logged("worker", all_threads=True, execution=_execution_of(message)):
                    result = handler(lambda_event([message], queue_arn, settings.region), LocalLambdaContext())
                failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
            except Exception:  # noqa: BLE001 - as Lambda: the message comes back after its timeout
                logger.exception("handler failed for message %s", message["MessageId"])
                failed = {message["MessageId"]}
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def _execution_of(message: dict) -> str | None:
    """The execution id a run message names (for the invocation log), if it is readable."""
    try:
        return str(json.loads(message["Body"])["executionId"])
    except (KeyError, TypeError, ValueError):
        return None


def main() -> int:
    """Run one worker until SIGTERM (a run in progress is left to its heartbeat, like a lost Lambda)."""
    logging.basicConfig(level=os.environ.get("RUNNER_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    stop: list = []

    def request_stop(*_: object) -> None:
        stop.append(True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        poll_forever(stop)
    except SystemExit:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
