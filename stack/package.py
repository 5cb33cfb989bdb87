"""`make package`: the deployable stack in `dist/`, built offline.

`chalice package` generates the API, its functions and their roles, and merges
infra/template.yaml (and infra/overlay.yaml) into that template. What Chalice cannot express is
finished here, each step a function below:
- a Chalice SQS consumer names its queue by the template's logical id (`queue="CallbackQueue"`):
  its event source is bound to that queue's ARN, so queue names derive from the stack's, and it
  reports partial batch failures;
- the functions' policy files name resources as `${LogicalId}` / `${LogicalId.Arn}`
  (CloudFormation's Fn::Sub syntax): each such string becomes an Fn::Sub, which scopes every grant
  to this stack's own resources;
- the functions' EventBridge patterns name resources the same way (`${ExecutionStateMachine}`);
- the state machines' definitions are copied next to the template, so that every relative
  reference in `dist/template.yaml` resolves inside `dist/`.

Usage: python -m stack.package [--out dist] [--stage dev]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from chalicelib.platform.template import TEMPLATE_PATH, load_template

ROOT = TEMPLATE_PATH.parents[1]
OVERLAY_PATH = TEMPLATE_PATH.parent / "overlay.yaml"
CHALICE = Path(sys.executable).with_name("chalice")


def merge(base: Any, over: Any) -> Any:
    """`over` laid over `base`, key by key (the way Chalice merges a template over its own)."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{key: merge(base.get(key), value) for key, value in over.items()}}
    return over


def merged_sources() -> dict:
    """infra/template.yaml with infra/overlay.yaml over it."""
    return merge(load_template(TEMPLATE_PATH), load_template(OVERLAY_PATH))


def run_chalice(sources: dict, out: Path, stage: str) -> dict:
    """`chalice package` of the app with `sources` merged in; the generated template."""
    with tempfile.TemporaryDirectory(prefix="runner-package-") as scratch:
        merge_file = Path(scratch) / "merge.yaml"
        merge_file.write_text(yaml.safe_dump(sources, sort_keys=False), encoding="utf-8")
        generated = Path(scratch) / "out"
        # Chalice wants a region for ARNs it never resolves here; nothing calls AWS.
        env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
        subprocess.run([str(CHALICE), "package", "--stage", stage, "--pkg-format", "cloudformation",
                        "--template-format", "yaml", "--merge-template", str(merge_file), str(generated)],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(generated / "deployment.zip", out / "deployment.zip")
        return load_template(generated / "sam.yaml")


def bind_queue_consumers(template: dict) -> None:
    """Point each Chalice SQS event source at the template queue its name is the logical id of."""
    queues = {name for name, value in template["Resources"].items() if value["Type"] == "AWS::SQS::Queue"}
    for logical_id, value in template["Resources"].items():
        if value["Type"] != "AWS::Serverless::Function":
            continue
        for event in value["Properties"].get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            queue = event["Properties"]["Queue"]
            if isinstance(queue, dict) and "Fn::Sub" in queue:  # Chalice: arn:...:sqs:...:<name>
                name = queue["Fn::Sub"].rsplit(":", 1)[1]
                if name not in queues:
                    raise SystemExit(f"{logical_id} consumes queue {name!r}, which infra/template.yaml does not declare")
                event["Properties"]["Queue"] = {"Fn::GetAtt": [name, "Arn"]}
                event["Properties"]["FunctionResponseTypes"] = ["ReportBatchItemFailures"]


def _substituted(value: Any) -> Any:
    """`value` with every `${...}` string made an Fn::Sub (intrinsic functions left as they are)."""
    if isinstance(value, list):
        return [_substituted(item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)).startswith(("Fn::", "Ref")):
            return value  # already an intrinsic function
        return {key: _substituted(item) for key, item in value.items()}
    if isinstance(value, str) and "${" in value:
        if "${aws:" in value:
            raise SystemExit(f"IAM policy variable in {value!r}: write it as ${{!aws:...}}")
        return {"Fn::Sub": value}
    return value


def scope_policies(template: dict) -> None:
    """Turn every `${...}` string of the roles' policy documents into an Fn::Sub."""
    for value in template["Resources"].values():
        if value["Type"] == "AWS::IAM::Role":
            for policy in value["Properties"].get("Policies", []):
                policy["PolicyDocument"] = _substituted(policy["PolicyDocument"])


def scope_event_patterns(template: dict) -> None:
    """Turn every `${...}` string of the functions' EventBridge patterns (Chalice on_cw_event) into an Fn::Sub."""
    for value in template["Resources"].values():
        if value["Type"] != "AWS::Serverless::Function":
            continue
        for event in value["Properties"].get("Events", {}).values():
            if event["Type"] == "CloudWatchEvent":
                event["Properties"]["Pattern"] = _substituted(event["Properties"]["Pattern"])


def copy_definitions(template: dict, out: Path) -> None:
    """Copy each state machine's DefinitionUri file under `out`, at the same relative path."""
    for value in template["Resources"].values():
        uri = value.get("Properties", {}).get("DefinitionUri")
        if isinstance(uri, str) and "://" not in uri:
            target = out / uri
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(TEMPLATE_PATH.parent / uri, target)


def package(out: Path, stage: str = "dev") -> Path:
    """Write the deployable template and its artefacts to `out`; the template's path."""
    if out.exists():
        shutil.rmtree(out)
    template = run_chalice(merged_sources(), out, stage)
    bind_queue_consumers(template)
    scope_event_patterns(template)
    scope_policies(template)
    copy_definitions(template, out)
    path = out / "template.yaml"
    path.write_text(yaml.safe_dump(template, sort_keys=False, width=120), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--stage", default="dev")
    args = parser.parse_args()
    path = package(args.out.resolve(), args.stage)
    print(f"packaged: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    main()
