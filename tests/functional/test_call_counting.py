"""The AWS call counter: per thread, per process, and local mode's invocation log built on it."""
from __future__ import annotations

import logging
import threading

import boto3
import pytest
from moto import mock_aws

from chalicelib.platform import aws
from localmode import invocations


@pytest.fixture(autouse=True)
def emulated():
    with mock_aws():
        yield


def instrumented_sqs():
    return aws.instrument(boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x",
                                       aws_secret_access_key="x"))


def in_thread(work):
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def test_a_thread_counter_misses_other_threads_and_a_process_counter_sees_them():
    sqs = instrumented_sqs()
    with aws.counting_calls() as own, aws.counting_calls(all_threads=True) as every:
        sqs.list_queues()
        in_thread(sqs.list_queues)
    assert own == ["sqs.ListQueues"]
    assert every == ["sqs.ListQueues", "sqs.ListQueues"]
    sqs.list_queues()  # after the blocks: counted by neither
    assert len(own) == 1 and len(every) == 2


def test_nested_counters_with_equal_contents_each_stop_at_their_own_end():
    sqs = instrumented_sqs()
    with aws.counting_calls() as outer:
        with aws.counting_calls() as inner:
            pass  # both empty, hence equal, when the inner one ends
        sqs.list_queues()
    assert outer == ["sqs.ListQueues"] and inner == []


def test_the_invocation_log_is_off_unless_asked(monkeypatch, caplog):
    monkeypatch.delenv(invocations.VARIABLE, raising=False)
    with caplog.at_level(logging.INFO, logger=invocations.logger.name):
        with invocations.logged("worker"):
            instrumented_sqs().list_queues()
    assert not caplog.records


def test_the_invocation_log_names_the_function_its_calls_and_details(monkeypatch, caplog):
    monkeypatch.setenv(invocations.VARIABLE, "1")
    sqs = instrumented_sqs()
    with caplog.at_level(logging.INFO, logger=invocations.logger.name):
        with invocations.logged("worker", all_threads=True, execution="e-1"):
            sqs.list_queues()
            in_thread(sqs.list_queues)
    [record] = caplog.records
    parsed = invocations.parse(f"2026-11-30 INFO {record.name}[1]: {record.getMessage()}")
    assert parsed["function"] == "worker" and parsed["execution"] == "e-1"
    assert parsed["calls"] == {"sqs.ListQueues": 2} and parsed["seconds"] >= 0 and parsed["cpu_s"] >= 0
    assert invocations.parse("INFO runner.local[1]: invocation {}") is None
