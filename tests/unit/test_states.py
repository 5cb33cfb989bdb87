"""The execution state table, the 409s it words, and every writer of a status checked against it (no IO)."""
from __future__ import annotations

import ast
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from chalicelib.executions import states
from chalicelib.platform.models import Execution

ROOT = Path(__file__).resolve().parents[2]
STATE_MACHINES = sorted((ROOT / "infra" / "statemachines").glob("*.asl.json"))
ALL = frozenset(states.ORDER)
ACTIONS = {"restart": states.RESTART, "stop": states.STOP, "kill": states.KILL}


# --- the table ------------------------------------------------------------------------------------

def test_every_status_is_named_once_and_is_either_active_or_final():
    assert len(states.ORDER) == len(ALL) == 10
    assert set(states.ALLOWED_FROM) == ALL
    assert states.ACTIVE | states.FINAL == ALL and not states.ACTIVE & states.FINAL
    assert all(sources <= ALL for sources in states.ALLOWED_FROM.values())


def test_no_status_follows_itself():
    assert not [status for status in ALL if states.allowed(status, status)]


def test_an_ended_execution_only_moves_again_when_restarted():
    for target, sources in states.ALLOWED_FROM.items():
        if target != states.PENDING:
            assert not sources & states.FINAL, target
    assert states.sources(states.PENDING) == sorted(states.RESTARTABLE) == sorted(states.FINAL - {states.SUCCESS})


def test_every_active_status_can_end():
    for status in states.ACTIVE:
        reached, frontier = {status}, [status]
        while frontier:
            current = frontier.pop()
            for target in ALL - reached:
                if states.allowed(current, target):
                    reached.add(target)
                    frontier.append(target)
        assert reached & states.FINAL, f"{status} can never end"


def test_a_lost_worker_ends_every_active_status_by_a_transition_of_the_table():
    assert set(states.WORKER_LOST) == states.ACTIVE
    for status, target in states.WORKER_LOST.items():
        assert target in states.FINAL and states.allowed(status, target), (status, target)


def test_the_condition_of_a_transition_names_its_sources_and_the_attempt():
    placeholders: dict = {}
    values: dict = {}
    condition = states.transition_condition(Execution, states.KILLED, attempt=3).serialize(placeholders, values)
    named = {value["S"] for value in values.values() if "S" in value}
    assert named == states.ALLOWED_FROM[states.KILLED]
    assert {"status", "attempt"} <= set(placeholders) and {"N": "3"} in values.values()
    assert " IN " in condition and " AND " in condition


# --- the 409s -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ACTIONS))
@pytest.mark.parametrize("status", states.ORDER)
def test_an_action_accepts_what_may_precede_its_outcome_and_its_refusal_names_exactly_that(name, status):
    action = ACTIONS[name]
    assert action.accepts(status) == states.allowed(status, action.outcome)
    message = action.refused("e-1", status)
    assert message.startswith(f"execution e-1 is {status}")
    listed = message.split("only ", 1)[1]
    assert {word for word in ALL if re.search(rf"\b{word}\b", listed)} == action.accepted()


def test_the_refusals_keep_their_wording():
    assert states.RESTART.refused("e-1", "RUNNING") == (
        "execution e-1 is RUNNING; only FAILURE, INIT_FAILURE, STOPPED or KILLED executions can be restarted")
    assert states.STOP.refused("e-1", "KILLED") == (
        "execution e-1 is KILLED: only a PENDING, INITIALIZING, RUNNING or STOPPING execution can be stopped")
    assert states.KILL.refused("e-1", "SUCCESS") == (
        "execution e-1 is SUCCESS: only a PENDING, INITIALIZING, RUNNING, STOPPING or KILLING execution can be killed")


def test_what_each_action_refuses_is_what_the_api_documents():
    def refused(action: states.Action) -> frozenset[str]:
        return frozenset(status for status in ALL if not action.accepts(status))

    assert refused(states.STOP) == states.FINAL | {states.KILLING}  # "has ended, or is being killed"
    assert refused(states.KILL) == states.FINAL  # "has ended"
    assert refused(states.RESTART) == states.ACTIVE | {states.SUCCESS}


def test_the_documented_restart_conflict_is_the_message_the_service_answers():
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    restart = spec["paths"]["/jobs/{accountAlias}/{jobId}/executions/{executionId}/restart"]["post"]
    example = restart["responses"]["409"]["content"]["application/json"]["example"]["message"]
    execution_id, status = re.match(r"execution (\S+) is (\w+);", example).groups()
    assert example == states.RESTART.refused(execution_id, status)


# --- the workflows' writes ------------------------------------------------------------------------

def _tasks(machine: dict) -> dict[str, dict]:
    """Every state of a state machine by name, inside Parallel and Map states too."""
    found: dict[str, dict] = {}
    for name, state in machine["States"].items():
        found[name] = state
        for inner in state.get("Branches", []) + [state[key] for key in ("Iterator", "ItemProcessor") if key in state]:
            found.update(_tasks(inner))
    return found


def _unwrapped(clause: str) -> str:
    """The clause without parentheses around the whole of it."""
    clause = clause.strip()
    while clause.startswith("(") and clause.endswith(")"):
        depth = 0
        for index, char in enumerate(clause[:-1]):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0 and index > 0:
                return clause  # "(a) = (b)": the first parenthesis closes before the end
        clause = clause[1:-1].strip()
    return clause


def _clauses(expression: str) -> list[str]:
    # The conditions are conjunctions; anything else this test cannot read, so it says so.
    assert " OR " not in expression.upper() and " NOT " not in expression.upper(), expression
    return [_unwrapped(clause) for clause in re.split(r"\s+AND\s+", _unwrapped(expression), flags=re.IGNORECASE)]


def _literal(values: dict, key: str) -> str:
    value = values[key]
    assert set(value) == {"S"}, f"{key} is not a literal status: {value}"
    return value["S"]


class StatusWrite(NamedTuple):
    """A workflow state that writes an execution's status."""

    state: str
    previous: frozenset[str]  # the statuses its condition lets it write over
    target: str
    own_attempt: bool  # conditional on the attempt its workflow runs for


def _target(resource: str, parameters: dict, status_names: set[str]) -> str | None:
    """The status a putItem or updateItem writes (None: it writes no status)."""
    values = parameters.get("ExpressionAttributeValues") or {}
    if resource.lower().endswith("putitem"):
        item = parameters.get("Item") or {}
        return _literal(item, "status") if "status" in item else None
    sets = re.search(r"\bSET\s+(.*?)(?=\s+\b(?:REMOVE|ADD|DELETE)\b|$)", parameters.get("UpdateExpression", ""),
                     re.IGNORECASE)
    for status_name in status_names:
        assignment = re.search(rf"(?:^|,)\s*{re.escape(status_name)}\s*=\s*([^,]*)", sets.group(1)) if sets else None
        if assignment:
            placeholder = assignment.group(1).strip()
            assert re.fullmatch(r":\w+", placeholder), f"a status computed from {placeholder!r}"
            return _literal(values, placeholder)
    return None


def _status_write(name: str, state: dict) -> StatusWrite | None:
    resource = state.get("Resource", "")
    if state.get("Type") != "Task" or not re.search(r"dynamodb:(updateItem|putItem)$", resource, re.IGNORECASE):
        return None
    parameters = state.get("Parameters") or state.get("Arguments") or {}
    names = parameters.get("ExpressionAttributeNames") or {}
    status_names = {placeholder for placeholder, attribute in names.items() if attribute == "status"} | {"status"}
    target = _target(resource, parameters, status_names)
    if target is None:
        return None
    values = parameters.get("ExpressionAttributeValues") or {}
    previous, own_attempt = ALL, False  # no condition on the status: it may write over any
    condition = parameters.get("ConditionExpression")
    for clause in _clauses(condition) if condition else []:
        left = clause.split()[0]
        if left in status_names:
            equal = re.fullmatch(r"\S+\s*=\s*(:\w+)", clause)
            among = re.fullmatch(r"\S+\s+IN\s*\(([^)]*)\)", clause, re.IGNORECASE)
            assert equal or among, f"{name}: cannot read {clause!r}"
            placeholders = [equal.group(1)] if equal else [part.strip() for part in among.group(1).split(",")]
            previous = frozenset(_literal(values, placeholder) for placeholder in placeholders)
        elif names.get(left, left) == "attempt" and re.fullmatch(r"\S+\s*=\s*:\w+", clause):
            own_attempt = True
    return StatusWrite(name, previous, target, own_attempt)


def status_writes(path: Path) -> list[StatusWrite]:
    """Every status write of a state machine."""
    found = (_status_write(name, state) for name, state in _tasks(json.loads(path.read_text())).items())
    return [write for write in found if write is not None]


MACHINES = [path.name for path in STATE_MACHINES]


@lru_cache(maxsize=1)
def all_writes() -> dict[str, list[StatusWrite]]:
    """The status writes of each state machine, by file name."""
    return {path.name: status_writes(path) for path in STATE_MACHINES}


def test_both_state_machines_are_read_and_their_status_writes_found():
    assert MACHINES == ["control.asl.json", "execution.asl.json"]
    assert all(all_writes().values())
    assert {write.target for writes in all_writes().values() for write in writes} == {
        states.STOPPING, states.STOPPED, states.KILLING, states.KILLED, states.FAILURE}


@pytest.mark.parametrize("machine", MACHINES)
def test_every_status_the_workflows_write_follows_the_table(machine):
    for write in all_writes()[machine]:
        forbidden = sorted(status for status in write.previous if not states.allowed(status, write.target))
        assert not forbidden, f"{machine} {write.state} may write {write.target} over {forbidden}"


@pytest.mark.parametrize("machine", MACHINES)
def test_every_status_the_workflows_write_is_for_their_own_attempt(machine):
    assert [write.state for write in all_writes()[machine] if not write.own_attempt] == []


@pytest.mark.parametrize("machine", MACHINES)
def test_every_status_the_workflows_write_is_noticed_next(machine):
    tasks = _tasks(json.loads((ROOT / "infra" / "statemachines" / machine).read_text()))
    for write in all_writes()[machine]:
        notice = tasks[tasks[write.state]["Next"]]
        assert notice["Resource"].endswith("sqs:sendMessage"), write.state
        assert (notice.get("Parameters") or notice["Arguments"])["MessageBody"]["statusChange"]["status"] == write.target


def test_a_lost_worker_ends_an_attempt_as_the_execution_workflow_does():
    written = {(status, write.target) for write in all_writes()["execution.asl.json"] for status in write.previous}
    assert written == set(states.WORKER_LOST.items())


# --- the Python writers ---------------------------------------------------------------------------

PYTHON_WRITERS = ("chalicelib", "runner_lambda", "localmode")
# Writers whose statuses are data: local mode's recovery writes states.WORKER_LOST[status] over the
# status it read (checked above).
DATA_DRIVEN = {("localmode/server.py", "recover_executions")}


def _status_of(node: ast.expr) -> str | None:
    """The status a `states.NAME` expression names (None for anything else)."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "states":
        return getattr(states, node.attr, None)
    return None


def _status_sets(function: ast.AST) -> list[ast.expr]:
    return [node.args[0] for node in ast.walk(function)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "set"
            and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "status"
            and isinstance(node.func.value.value, ast.Name) and node.func.value.value.id == "Execution"]


def _conditions(function: ast.AST) -> list[ast.expr]:
    return [keyword.value for node in ast.walk(function) if isinstance(node, ast.Call)
            for keyword in node.keywords if keyword.arg == "condition"]


def _status_equals(condition: ast.expr) -> list[str | None]:
    """The statuses an `Execution.status == states.X` comparison inside the condition names."""
    return [_status_of(node.comparators[0]) for node in ast.walk(condition)
            if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.Eq)
            and isinstance(node.left, ast.Attribute) and node.left.attr == "status"]


def python_status_writers() -> list[tuple[str, str, ast.FunctionDef]]:
    """(file, function, its tree) of every function that sets an execution's status."""
    found = []
    for folder in PYTHON_WRITERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _status_sets(node):
                    found.append((str(path.relative_to(ROOT)), node.name, node))
    return found


def test_the_python_writers_are_found():
    writers = {(path, name) for path, name, _ in python_status_writers()}
    assert {("runner_lambda/reporting.py", "claim"), ("runner_lambda/reporting.py", "finish"),
            ("chalicelib/executions/service.py", "_move"), ("localmode/server.py", "recover_executions")} <= writers


def test_every_status_a_python_writer_sets_is_conditional_on_the_table():
    for path, name, function in python_status_writers():
        if (path, name) in DATA_DRIVEN:
            continue
        conditions = _conditions(function)
        assert len(conditions) == 1, f"{path} {name}: one conditional write expected"
        condition = conditions[0]
        for target in _status_sets(function):
            if isinstance(condition, ast.Call) and getattr(condition.func, "attr", None) == "transition_condition":
                # The table itself decides; it must be asked about the status being set.
                assert ast.dump(condition.args[1]) == ast.dump(target), f"{path} {name}"
                continue
            previous = _status_equals(condition)
            assert previous and None not in previous, f"{path} {name}: a status write not conditioned on the table"
            assert all(states.allowed(status, _status_of(target)) for status in previous), f"{path} {name}"


def test_an_execution_is_created_pending():
    for folder in PYTHON_WRITERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Execution":
                    for keyword in node.keywords:
                        if keyword.arg == "status":
                            assert _status_of(keyword.value) == states.PENDING, f"{path}:{node.lineno}"
