"""The login throttle: at most 10 tries in a row per username, then 15 minutes of 429.

The count lives on the user item, not in memory: Lambda runs many API instances at once, and
each would count alone. A try is *reserved* before its password is hashed, with one conditional
UpdateItem that also answers the user item:

- below 9 tries since the last success: ADD 1 (condition: fewer than 9, no lock);
- the 10th: set the count to 10 *and* the lock (now + 15 min) at once, before hashing. Should the
  password be right, the success lifts the lock; should the process die before knowing, the lock
  simply ends in 15 minutes;
- a lock that has ended: the count starts again at 1 (condition: the lock read is still there).

When the reservation's condition fails, one consistent GetItem says why: no such user (the
caller then hashes against a dummy hash: both cases cost the same), a lock still running
(TooManyRequests with the seconds left, and *no* argon2 hash is computed: that is what the
throttle saves), or a lost race (try again). A success writes the count back to 0. So 100
concurrent guesses get at most 10 hashes; the rest are refused by DynamoDB's condition.

A successful login therefore costs two UpdateItems instead of a GetItem; a refused one, one
failed conditional UpdateItem and a GetItem.
"""
from __future__ import annotations

import math
import time
from typing import Callable

from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib.platform.errors import TooManyRequests
from chalicelib.platform.models import User
from chalicelib.platform.storage import condition_failed

MAX_FAILED_LOGINS = 10
LOCKOUT_SECONDS = 15 * 60
# Reservations lost to concurrent tries before the caller is told to come back in a second.
_RACES = 5


def _refuse(retry_after: float) -> TooManyRequests:
    seconds = max(1, math.ceil(retry_after))
    return TooManyRequests(f"too many failed logins for this username; try again in {seconds} s",
                           "username", seconds)


def reserve_try(username: str, clock: Callable[[], float] = time.time) -> User | None:
    """Count one login try of `username` before its password is checked: the user item, or None
    when there is no such user. TooManyRequests (with Retry-After) while the username is locked."""
    for _ in range(_RACES):
        now = int(clock())
        user = User(username)
        try:
            user.update(actions=[User.failed_logins.add(1)],
                        condition=User.username.exists() & User.login_locked_until.does_not_exist() & (
                            User.failed_logins.does_not_exist() | (User.failed_logins < MAX_FAILED_LOGINS - 1)))
            return user
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
        try:
            current = User.get(username, consistent_read=True)
        except DoesNotExist:
            return None
        locked_until = current.login_locked_until
        if locked_until is not None and locked_until > now:
            raise _refuse(locked_until - now)
        if locked_until is not None:  # the lock has ended: count again from this try
            actions = [User.failed_logins.set(1), User.login_locked_until.remove()]
            condition = User.login_locked_until == locked_until
        elif (current.failed_logins or 0) >= MAX_FAILED_LOGINS - 1:  # the last try before the lock
            actions = [User.failed_logins.set(MAX_FAILED_LOGINS), User.login_locked_until.set(now + LOCKOUT_SECONDS)]
            condition = User.login_locked_until.does_not_exist() & (User.failed_logins >= MAX_FAILED_LOGINS - 1)
        else:
            continue  # a concurrent success reset the count: reserve again
        try:
            current.update(actions=actions, condition=User.username.exists() & condition)
            return current
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
    raise _refuse(1)


def clear(user: User) -> bool:
    """A success: the count back to 0, no lock. False when the user was deleted meanwhile."""
    try:
        user.update(actions=[User.failed_logins.set(0), User.login_locked_until.remove()],
                    condition=User.username.exists())
    except UpdateError as exc:
        if condition_failed(exc):
            return False
        raise
    return True
