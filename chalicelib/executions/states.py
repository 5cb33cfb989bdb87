"""The execution state machine: which status may follow which, as data (DESIGN.md section 4)."""
from __future__ import annotations

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


def allowed(current: str, target: str) -> bool:
    """Whether an execution in `current` may move to `target`."""
    return current in ALLOWED_FROM.get(target, frozenset())


def sources(target: str) -> list[str]:
    """The statuses `target` may follow, sorted (for condition expressions)."""
    return sorted(ALLOWED_FROM[target])


def transition_condition(model, target: str, attempt: int | None = None):
    """A PynamoDB condition: the item's status allows `target` (and it is still `attempt`)."""
    condition = model.status.is_in(*sources(target))
    if attempt is not None:
        condition &= model.attempt == attempt
    return condition
