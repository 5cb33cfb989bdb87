"""The execution state machine: which status may follow which, as data (docs/architecture.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from chalicelib.platform.errors import either

PENDING = "PENDING"
INITIALIZING = "INITIALIZING"
RUNNING = "RUNNING"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
INIT_FAILURE = "INIT_FAILURE"
STOPPING = "STOPPING"
STOPPED = "STOPPED"
KILLING = "KILLING"
KILLED = "KILLED"

# The lifecycle's order: messages name statuses in it.
ORDER = (PENDING, INITIALIZING, RUNNING, STOPPING, KILLING, SUCCESS, FAILURE, INIT_FAILURE, STOPPED, KILLED)

FINAL = frozenset({SUCCESS, FAILURE, INIT_FAILURE, STOPPED, KILLED})
RESTARTABLE = frozenset({FAILURE, INIT_FAILURE, STOPPED, KILLED})
ACTIVE = frozenset({PENDING, INITIALIZING, RUNNING, STOPPING, KILLING})

# target status -> the statuses it may follow.
ALLOWED_FROM: dict[str, frozenset[str]] = {
    PENDING: RESTARTABLE,
    INITIALIZING: frozenset({PENDING}),
    RUNNING: frozenset({INITIALIZING}),
    SUCCESS: frozenset({RUNNING, STOPPING}),
    FAILURE: frozenset({PENDING, INITIALIZING, RUNNING, STOPPING}),
    INIT_FAILURE: frozenset({INITIALIZING}),
    STOPPING: frozenset({PENDING, INITIALIZING, RUNNING}),
    STOPPED: frozenset({PENDING, INITIALIZING, RUNNING, STOPPING}),
    KILLING: frozenset({PENDING, INITIALIZING, RUNNING, STOPPING}),
    KILLED: frozenset({PENDING, INITIALIZING, RUNNING, STOPPING, KILLING}),
}


# What an active attempt whose worker is lost ends as: FAILURE, except that a kill in progress is
# done (the workflow's RecordWorkerLost and RecordKillUnconfirmed; local mode, for the attempts a
# stop of it left without a workflow).
WORKER_LOST: dict[str, str] = {
    PENDING: FAILURE,
    INITIALIZING: FAILURE,
    RUNNING: FAILURE,
    STOPPING: FAILURE,
    KILLING: KILLED,
}


def passed_through(status: str, current: str) -> bool:
    """Whether one attempt now in `current` may have been in `status` on its way (or be in it).

    Follows the table within an attempt: a restart (back to PENDING) begins another attempt.
    """
    if status not in ALLOWED_FROM or current not in ALLOWED_FROM:
        return False
    seen, frontier = {status}, [status]
    while frontier:
        here = frontier.pop()
        for target, sources_of_target in ALLOWED_FROM.items():
            if target != PENDING and here in sources_of_target and target not in seen:
                seen.add(target)
                frontier.append(target)
    return current in seen


def allowed(current: str, target: str) -> bool:
    """Whether an execution in `current` may move to `target`."""
    return current in ALLOWED_FROM.get(target, frozenset())


def sources(target: str) -> list[str]:
    """The statuses `target` may follow, sorted (for condition expressions)."""
    return sorted(ALLOWED_FROM[target])


def in_order(statuses: Iterable[str]) -> list[str]:
    """The statuses in lifecycle order."""
    return sorted(statuses, key=ORDER.index)


@dataclass(frozen=True)
class Action:
    """A request on an execution: the status it leads to decides the statuses it accepts."""

    outcome: str
    # The 409 message; {execution_id}, {status} and {accepted} are filled in.
    refusal: str

    def accepted(self) -> frozenset[str]:
        """The statuses an execution may be in for this action."""
        return ALLOWED_FROM[self.outcome]

    def accepts(self, status: str) -> bool:
        """Whether an execution in `status` may take this action."""
        return allowed(status, self.outcome)

    def refused(self, execution_id: str, status: str) -> str:
        """The message of a 409 for an execution in `status`, naming the statuses this action accepts."""
        return self.refusal.format(execution_id=execution_id, status=status, accepted=either(in_order(self.accepted())))


# A stop or a kill is judged by where it ends (STOPPED, KILLED), which covers its way there: a
# PENDING execution ends at once, a running one passes through STOPPING or KILLING, and asking
# again while it does is no conflict.
RESTART = Action(PENDING, "execution {execution_id} is {status}; only {accepted} executions can be restarted")
STOP = Action(STOPPED, "execution {execution_id} is {status}: only a {accepted} execution can be stopped")
KILL = Action(KILLED, "execution {execution_id} is {status}: only a {accepted} execution can be killed")


def transition_condition(model: Any, target: str, attempt: int | None = None) -> Any:
    """A PynamoDB condition: the item's status allows `target` (and it is still `attempt`)."""
    condition = model.status.is_in(*sources(target))
    if attempt is not None:
        condition &= model.attempt == attempt
    return condition
