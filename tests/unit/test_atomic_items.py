"""Local mode's DynamoDB keeps DynamoDB's item-level atomicity under concurrent writers."""
from __future__ import annotations

import sys
import threading

import boto3
import pytest
from moto import mock_aws

from localmode.atomic_items import make_items_atomic


@pytest.fixture
def table():
    make_items_atomic()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, where moto's races show
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                              KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}])
        yield dynamodb
    sys.setswitchinterval(interval)


def test_concurrent_increments_are_all_counted(table):
    def add_ones() -> None:
        for _ in range(50):
            table.update_item(TableName="t", Key={"k": {"S": "a"}}, UpdateExpression="ADD n :one",
                              ExpressionAttributeValues={":one": {"N": "1"}})

    writers = [threading.Thread(target=add_ones) for _ in range(8)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert table.get_item(TableName="t", Key={"k": {"S": "a"}})["Item"]["n"] == {"N": "400"}


def test_a_conditional_put_admits_exactly_one_of_many_racers(table):
    won: list[int] = []

    def claim(n: int) -> None:
        try:
            table.put_item(TableName="t", Item={"k": {"S": "slot"}, "owner": {"N": str(n)}},
                           ConditionExpression="attribute_not_exists(k)")
            won.append(n)
        except table.exceptions.ConditionalCheckFailedException:
            pass

    racers = [threading.Thread(target=claim, args=(n,)) for n in range(16)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert len(won) == 1
    assert table.get_item(TableName="t", Key={"k": {"S": "slot"}})["Item"]["owner"] == {"N": str(won[0])}
