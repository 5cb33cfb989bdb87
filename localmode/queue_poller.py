"""Local mode's stand-in for Lambda's SQS trigger in the API process: poll a queue, call a handler.

The handler gets the event Lambda would pass (`{"Records": [...]}`) and answers
`{"batchItemFailures": [...]}`; the other messages are deleted, the failed ones come back after
the queue's visibility timeout, as on AWS.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from localmode import invocations

logger = logging.getLogger("runner.local.queue")

# A receive waits this long for a message (returning as soon as one comes), as Lambda's pollers
# long-poll: an idle local mode then asks the emulator a few times a second in all, not dozens.
POLL_WAIT_SECONDS = 5


def lambda_event(messages: list[dict], queue_arn: str, region: str) -> dict:
    """The SQS event Lambda builds from received messages."""
    return {"Records": [{
        "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": message["Body"],
        "attributes": message.get("Attributes", {}), "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""), "eventSource": "aws:sqs", "eventSourceARN": queue_arn,
        "awsRegion": region} for message in messages]}


class QueuePoller:
    """`threads` long-polling loops feeding one queue's messages to `handler(event, context)`."""

    def __init__(self, sqs: Any, queue_url: str, handler: Callable[[dict, Any], Any], region: str,
                 threads: int = 4, batch_size: int = 10, function: str = "handler") -> None:
        self._function = function  # the function's name in the invocation log (localmode/invocations.py)
        self._sqs = sqs
        self._queue_url = queue_url
        self._handler = handler
        self._region = region
        self._batch_size = batch_size
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, name=f"queue-poller-{index}", daemon=True)
                         for index in range(threads)]
        self._arn = ""

    def start(self) -> None:
        self._arn = self._sqs.get_queue_attributes(QueueUrl=self._queue_url,
                                                   AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        for thread in self._threads:
            thread.start()

    def request_stop(self) -> None:
        """Poll no more (a receive under way still ends its wait)."""
        self._stop.set()

    def stop(self) -> None:
        self.request_stop()
        for thread in self._threads:
            thread.join(timeout=POLL_WAIT_SECONDS + 2)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once(wait_seconds=POLL_WAIT_SECONDS)
            except Exception:  # noqa: BLE001 - the emulator may be stopping; poll again
                if not self._stop.wait(1.0):
                    logger.exception("polling %s failed", self._queue_url)

    def poll_once(self, wait_seconds: int = 0) -> int:
        """Receive one batch and hand it over; answers how many messages were handled."""
        messages = self._sqs.receive_message(QueueUrl=self._queue_url, MaxNumberOfMessages=self._batch_size,
                                             WaitTimeSeconds=wait_seconds).get("Messages", [])
        if not messages:
            return 0
        try:
            with invocations.logged(self._function, messages=len(messages)):
                answer = self._handler(lambda_event(messages, self._arn, self._region), None) or {}
            failed = {item["itemIdentifier"] for item in answer.get("batchItemFailures", [])}
        except Exception:  # noqa: BLE001 - as Lambda: the whole batch comes back later
            logger.exception("the handler of %s failed", self._queue_url)
            return 0
        done = [message for message in messages if message["MessageId"] not in failed]
        if done:
            self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(done)])
        return len(done)
