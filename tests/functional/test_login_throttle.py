"""The login throttle: 10 failed tries in a row lock a username for 15 minutes, without hashing."""
from __future__ import annotations

import threading
import time

import pytest
from argon2 import PasswordHasher

from chalicelib.auth import throttle, users
from chalicelib.platform.errors import TooManyRequests, Unauthenticated
from chalicelib.platform.models import User

RIGHT = "correct-horse-battery"  # demo-user's password (tests/functional/conftest.py)
WRONG = "wrong-password-000"
ROBOT = "robot-password-123"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    """argon2 with the smallest cost for the users these tests make: they log in dozens of times,
    and what they count is whether a hash is checked at all, not what one costs."""
    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.fixture
def hashes(monkeypatch) -> list[str]:
    """Every password check (argon2 verify) made from now on, by the hash it was checked against."""
    checked: list[str] = []
    verify = users._verify_hash

    def counting(stored, password):
        checked.append(stored)
        return verify(stored, password)

    monkeypatch.setattr(users, "_verify_hash", counting)
    return checked


def login(client, password: str, username: str = "demo-user"):
    return client.anonymous.post("/authentication/login", {"username": username, "password": password})


def assert_throttled(answer) -> int:
    assert answer.status == 429, (answer.status, answer.body)
    assert answer.body["code"] == "TooManyRequests" and answer.body["field"] == "username", answer.body
    assert answer.body["message"]
    retry_after = int(answer.headers["Retry-After"])
    assert 0 < retry_after <= throttle.LOCKOUT_SECONDS
    return retry_after


def test_ten_failures_lock_the_username_even_for_the_right_password_without_hashing(client, hashes):
    for _ in range(throttle.MAX_FAILED_LOGINS):
        assert login(client, WRONG).status == 401
    assert len(hashes) == throttle.MAX_FAILED_LOGINS
    hashes.clear()
    # WHEN the right password comes next THEN it is refused too, and no hash is computed
    retry_after = assert_throttled(login(client, RIGHT))
    assert retry_after > throttle.LOCKOUT_SECONDS - 120
    assert_throttled(login(client, WRONG))
    assert hashes == []
    # another username is not concerned
    assert login(client, "correct-horse-battery", "other-user").status == 200
    # WHEN the 15 minutes are over (the lock moved into the past) THEN the right password logs in
    User.get("demo-user").update(actions=[User.login_locked_until.set(int(time.time()) - 1)])
    assert login(client, RIGHT).status == 200
    assert User.get("demo-user").failed_logins == 0
    # and counting starts again from zero; a success before the 10th failure resets it
    for _ in range(2):
        for _ in range(throttle.MAX_FAILED_LOGINS - 1):
            assert login(client, WRONG).status == 401
        assert login(client, RIGHT).status == 200  # 18 failures, never 10 in a row
    assert User.get("demo-user").login_locked_until is None
    # AND a new password set by an administrator lifts a lock
    for _ in range(throttle.MAX_FAILED_LOGINS):
        login(client, "nope-nope-nope", "other-user")
    assert_throttled(login(client, "correct-horse-battery", "other-user"))
    assert client.other.get("/users/OTHER/other-user").status == 200  # its token still works meanwhile
    assert client.other.put("/users/OTHER/other-user", {"password": "a-brand-new-one"}).status == 200
    assert login(client, "a-brand-new-one", "other-user").status == 200


def test_concurrent_guesses_get_at_most_ten_hashes(client, monkeypatch):
    checked: list[str] = []
    monkeypatch.setattr(users, "_verify_hash", lambda stored, password: checked.append(stored) or False)
    outcomes: list[str] = []
    start = threading.Barrier(16, timeout=60)

    def guess():
        start.wait()
        try:
            users.authenticate("demo-user", WRONG)
        except (Unauthenticated, TooManyRequests) as error:
            outcomes.append(type(error).__name__)

    threads = [threading.Thread(target=guess) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(outcomes) == 16
    assert outcomes.count("Unauthenticated") == len(checked) == throttle.MAX_FAILED_LOGINS
    assert outcomes.count("TooManyRequests") == 16 - throttle.MAX_FAILED_LOGINS


def test_the_service_account_credential_check_counts_and_obeys_the_same_limit(client, hashes):
    users.create_user("robot@demo", ROBOT, "DEMO")
    good = {"alias": "nightly", "username": "robot@demo", "password": ROBOT}
    assert client.post("/serviceAccounts/DEMO", good).status == 201
    # a masked password with another username is refused without trying it on that user
    hashes.clear()
    other = client.put("/serviceAccounts/DEMO/nightly", {"username": "demo-user", "password": "********"})
    assert other.status == 400 and other.body["field"] == "password"
    assert hashes == [] and User.get("demo-user").failed_logins in (None, 0)
    # ten wrong passwords through the service-account routes lock robot@demo
    for attempt in range(throttle.MAX_FAILED_LOGINS):
        bad = {"alias": f"guess{attempt}", "username": "robot@demo", "password": f"guess-number-{attempt:04}"}
        answer = client.post("/serviceAccounts/DEMO", bad) if attempt % 2 else \
            client.put("/serviceAccounts/DEMO/nightly", {"username": "robot@demo", "password": bad["password"]})
        assert answer.status == 400 and answer.body["field"] == "password", answer.body
    hashes.clear()
    for answer in (client.post("/serviceAccounts/DEMO", {**good, "alias": "again"}),
                   client.put("/serviceAccounts/DEMO/nightly", {"username": "robot@demo", "password": "********"}),
                   login(client, ROBOT, "robot@demo")):
        assert_throttled(answer)
    assert hashes == []
    assert client.get("/serviceAccounts/DEMO/again").status == 404
