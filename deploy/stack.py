"""Step 3: create or update the stack through a change set, wait for it, and say why it failed.

A change set, rather than CreateStack/UpdateStack, makes one path for both cases and tells "no
changes" apart from a failure: CloudFormation fails a change set that would change nothing, and
that is a successful deploy. While the stack changes, its new events are printed as they come;
when it ends anywhere but CREATE_COMPLETE or UPDATE_COMPLETE, the resources that failed are
printed with CloudFormation's reasons (the first cause, not only the cascade of cancellations it
starts), and the deploy fails.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from botocore.exceptions import ClientError

from deploy import DeployError

SUCCESS = ("CREATE_COMPLETE", "UPDATE_COMPLETE")
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
# Properties whose presence on an IAM resource means the template names it (CAPABILITY_NAMED_IAM).
IAM_NAME_PROPERTIES = ("RoleName", "UserName", "GroupName", "ManagedPolicyName", "InstanceProfileName")
# Reasons CloudFormation gives to resources stopped because another one failed.
_CASCADE = ("Resource creation cancelled", "Resource update cancelled")


def capabilities(template: dict) -> list[str]:
    """What the template needs acknowledged: IAM always (SAM makes roles), named IAM and macros if used."""
    needed = ["CAPABILITY_IAM"]
    for resource in (template.get("Resources") or {}).values():
        if str(resource.get("Type", "")).startswith("AWS::IAM::") and \
                any(name in (resource.get("Properties") or {}) for name in IAM_NAME_PROPERTIES):
            needed.append("CAPABILITY_NAMED_IAM")
            break
    if template.get("Transform"):
        needed.append("CAPABILITY_AUTO_EXPAND")
    return needed


def check_parameter_names(template: dict, given: dict[str, str]) -> None:
    """Refuse a parameter the template does not declare (a typo would otherwise be ignored)."""
    declared = template.get("Parameters") or {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise DeployError(f"the template has no parameter {', '.join(unknown)} "
                          f"(it has {', '.join(sorted(declared)) or 'none'})")


def stack_parameters(template: dict, given: dict[str, str], previous: dict[str, str]) -> list[dict]:
    """The change set's parameters: those given, and the values set at an earlier deploy.

    A parameter not given keeps its earlier value when that differs from the template's default
    (someone chose it); one left at the default follows the template, whose default may change.
    """
    check_parameter_names(template, given)
    declared = template.get("Parameters") or {}
    result = [{"ParameterKey": key, "ParameterValue": str(value)} for key, value in given.items()]
    for key, spec in declared.items():
        if key in given:
            continue
        default = spec.get("Default")
        if key in previous and (default is None or previous[key] != str(default)):
            result.append({"ParameterKey": key, "UsePreviousValue": True})
        elif default is None:
            raise DeployError(f"the template's parameter {key} has no default: give it with PARAMETERS={key}=...")
    return result


def _describe(cloudformation: Any, stack: str) -> dict | None:
    try:
        return cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ValidationError" and "does not exist" in str(exc):
            return None
        raise


def _events_after(cloudformation: Any, stack_id: str, last_seen: str | None) -> list[dict]:
    """The stack's events newer than `last_seen` (an event id), oldest first."""
    newer: list[dict] = []
    for page in cloudformation.get_paginator("describe_stack_events").paginate(StackName=stack_id):
        for event in page["StackEvents"]:  # newest first
            if event["EventId"] == last_seen:
                return newer[::-1]
            newer.append(event)
    return newer[::-1]


def _latest_event_id(cloudformation: Any, stack_id: str) -> str | None:
    events = cloudformation.describe_stack_events(StackName=stack_id)["StackEvents"]
    return events[0]["EventId"] if events else None


def _event_line(event: dict) -> str:
    reason = event.get("ResourceStatusReason")
    return (f"  {event['ResourceStatus']:<28} {event.get('ResourceType', ''):<36} "
            f"{event.get('LogicalResourceId', '')}{': ' + reason if reason else ''}")


def wait_for_stack(cloudformation: Any, stack_id: str, last_seen: str | None, poll_seconds: float,
                   show: Callable[[str], None] = print) -> tuple[str, str | None]:
    """Wait until the stack is no longer changing, showing its new events; answers (status, last event id)."""
    while True:
        for event in _events_after(cloudformation, stack_id, last_seen):
            show(_event_line(event))
            last_seen = event["EventId"]
        status = cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            return status, last_seen
        time.sleep(poll_seconds)


def failure_reasons(cloudformation: Any, stack_id: str, since: str | None) -> list[str]:
    """The resources that failed after the event `since`, each with its reason; root causes first."""
    failed = [event for event in _events_after(cloudformation, stack_id, since)
              if event["ResourceStatus"].endswith("_FAILED") and event.get("ResourceStatusReason")
              and event.get("ResourceType") != "AWS::CloudFormation::Stack"]
    causes = [event for event in failed if not event["ResourceStatusReason"].startswith(_CASCADE)]
    lines = [f"{event['LogicalResourceId']} ({event['ResourceType']}) {event['ResourceStatus']}: "
             f"{event['ResourceStatusReason']}" for event in causes or failed]
    if not lines:
        stack = cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]
        lines = [f"{stack['StackName']} {stack['StackStatus']}: {stack.get('StackStatusReason') or 'no reason given'}"]
    return lines


def _wait_for_change_set(cloudformation: Any, change_set_id: str, poll_seconds: float) -> dict:
    while True:
        change_set = cloudformation.describe_change_set(ChangeSetName=change_set_id)
        if change_set["Status"] in ("CREATE_COMPLETE", "FAILED"):
            return change_set
        time.sleep(poll_seconds)


def _clear_failed_creation(cloudformation: Any, stack: dict, poll_seconds: float) -> None:
    # A stack whose first creation rolled back can only be deleted; it holds no resources but
    # those its template retains, which a new creation makes anew.
    print(f"stack {stack['StackName']} is ROLLBACK_COMPLETE (its first creation failed): deleting it to create it again")
    last_seen = _latest_event_id(cloudformation, stack["StackId"])
    cloudformation.delete_stack(StackName=stack["StackId"])
    status, _ = wait_for_stack(cloudformation, stack["StackId"], last_seen, poll_seconds)
    if status != "DELETE_COMPLETE":
        raise DeployError(f"stack {stack['StackName']} could not be deleted ({status}): delete it by hand, then deploy again")


def deploy_stack(cloudformation: Any, stack_name: str, source: dict, template: dict,
                 given: dict[str, str], poll_seconds: float = 5.0) -> str:
    """Create or update the stack: "created", "updated" or "unchanged".

    `source` is {"TemplateBody": text} or {"TemplateURL": url}, `template` the same template as data.
    """
    existing = _describe(cloudformation, stack_name)
    if existing and existing["StackStatus"] == "ROLLBACK_COMPLETE":
        _clear_failed_creation(cloudformation, existing, poll_seconds)
        existing = None
    if existing and existing["StackStatus"].endswith("_IN_PROGRESS") and existing["StackStatus"] != "REVIEW_IN_PROGRESS":
        raise DeployError(f"stack {stack_name} is {existing['StackStatus']}: deploy again once it has ended")
    creating = existing is None or existing["StackStatus"] == "REVIEW_IN_PROGRESS"
    previous = {} if creating else {p["ParameterKey"]: p.get("ParameterValue", "")
                                    for p in existing.get("Parameters") or []}
    try:
        created = cloudformation.create_change_set(
            StackName=stack_name, ChangeSetName=f"deploy-{time.strftime('%Y%m%d-%H%M%S')}",
            ChangeSetType="CREATE" if creating else "UPDATE", **source,
            Parameters=stack_parameters(template, given, previous), Capabilities=capabilities(template),
            Description="make deploy")
    except ClientError as exc:
        if any(text in str(exc) for text in NO_CHANGES):
            return "unchanged"
        raise DeployError(f"CloudFormation refused the change set: {exc.response['Error'].get('Message', exc)}") from None
    change_set = _wait_for_change_set(cloudformation, created["Id"], poll_seconds)
    if change_set["Status"] == "FAILED":
        reason = change_set.get("StatusReason") or "no reason given"
        if any(text in reason for text in NO_CHANGES):
            cloudformation.delete_change_set(ChangeSetName=created["Id"])
            return "unchanged"
        raise DeployError(f"the change set of stack {stack_name} failed: {reason}")
    stack_id = created["StackId"]
    before = _latest_event_id(cloudformation, stack_id)
    print(f"{'creating' if creating else 'updating'} stack {stack_name}")
    cloudformation.execute_change_set(ChangeSetName=created["Id"])
    status, _ = wait_for_stack(cloudformation, stack_id, before, poll_seconds)
    if status in SUCCESS:
        return "created" if creating else "updated"
    for line in failure_reasons(cloudformation, stack_id, before):
        print(line, file=sys.stderr)
    raise DeployError(f"stack {stack_name} ended {status}; the resources that failed and why are above")
