"""Least privilege, function by function, checked without AWS or a network.

The worker runs playbooks, which are hostile code: its credentials must be worth as little as
possible, and so must every other function's. For each function this test

1. collects every AWS call its code can make: it parses the sources the function ships with
   (`ast`), follows calls, constructor arguments and attributes from the function's entry point
   (a small type inference: what is a boto3 client of which service, which PynamoDB model a
   value is, which setting names a queue or a state machine), and turns each boto3 client call,
   PynamoDB model operation and Step Functions service integration into an IAM action on a
   resource of a deployment modelled on infra/template.yaml (account 123456789012, CloudFormation's
   generated names);
2. checks that the function's own policy allows each one (the Worker's and the state machines'
   roles from SAM's translation of infra/template.yaml, the Chalice functions' from the file
   .chalice/config.json names for each), conditions included (the KMS encryption context of each
   call site, and the partition key of each DynamoDB item call when the code names it literally);
3. checks that the policy allows nothing else: each (action, resource) a statement names is used;
   no `*` action, `Resource: "*"` only for the actions that take no resource; the worker has a role
   of its own with no managed policy.

A call the analysis cannot resolve (a client it cannot tell the service of, a model operation on a
value of unknown model) fails the test: annotate the code, or teach the test.
"""
from __future__ import annotations

import ast
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import boto3
import botocore.exceptions
import botocore.session
import pytest
from botocore import xform_name
from chalice.config import Config
from pynamodb.indexes import Index

from chalicelib.auth.signing_key import TOKEN_SIGNING_CONTEXT
from chalicelib.platform.models import MODELS, SIGNING_KEY_ITEM
from chalicelib.platform.template import TEMPLATE_PATH, load_template
from stack.package import scope_policies

ROOT = Path(__file__).resolve().parents[2]

# --- the modelled deployment ------------------------------------------------------------------

PARTITION, REGION, ACCOUNT, STACK = "aws", "eu-west-1", "123456789012", "runner-prod"
SUFFIX = "1A2B3C4D5E6F"  # CloudFormation's random part of a generated name
KEY_ID = "0a1b2c3d-4e5f-4a7b-8c9d-0e1f2a3b4c5d"
STACK_ID = f"arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/6f1c1c58-8f5e-11ef-9d83-52b1f0e3f6a1"

# Chalice's logical ids for its functions in the merged template (chalice package).
CHALICE_FUNCTIONS = {"api_handler": "APIHandler", "token_authorizer": "TokenAuthorizer",
                     "schedule_trigger": "ScheduleTrigger", "schedule_reconciler": "ScheduleReconciler",
                     "callback_sender": "CallbackSender", "run_handoff": "RunHandoff",
                     "slot_keeper": "SlotKeeper", "slot_release": "SlotRelease", "slot_reconciler": "SlotReconciler",
                     "execution_retry": "ExecutionRetry",
                     "fargate_launcher": "FargateLauncher"}
WORKER = "Worker"
# The Fargate task of the worker image: its code is runner_lambda/fargate.py's, its role the task
# definition's TaskRoleArn.
FARGATE_TASK = "FargateTaskDefinition"
# The image's URI in the modelled deployment (make deploy pushes `<stack>-worker:<tag>`).
WORKER_IMAGE_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{STACK}-worker:0123abcd"
STATE_MACHINES = ("ExecutionStateMachine", "ControlStateMachine")

# Actions that take no resource: IAM accepts only "*" for them.
STAR_ONLY = {"states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat",
             "scheduler:ListSchedules", "ecr:GetAuthorizationToken"}
# boto3 service name -> IAM prefix, where they differ.
IAM_PREFIX = {"stepfunctions": "states"}
# API operations authorised by another action.
ACTION_OF = {"sqs:SendMessageBatch": "sqs:SendMessage", "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
             "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility"}
# The argument of an operation that names its resource (resolved through the settings).
RESOURCE_ARG = {"sqs": "QueueUrl", "states:StartExecution": "stateMachineArn",
                "states:DescribeExecution": "executionArn", "secretsmanager:GetSecretValue": "SecretId",
                "ecs:RunTask": "taskDefinition"}
# Condition keys an operation's argument sets (resolved through the settings, as resources are).
CONTEXT_ARG = {"ecs:RunTask": {"ecs:cluster": "cluster"}}
# Lambda's SQS poller acts with the function's role.
EVENT_SOURCE_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
# Scheduler checks iam:PassRole on the target's role (Target.RoleArn: the setting named here).
PASSES_ROLE = {"scheduler:CreateSchedule": "scheduler_role_arn", "scheduler:UpdateSchedule": "scheduler_role_arn"}

# PynamoDB: operations on a model class, an instance, an index, a transaction -> DynamoDB actions.
MODEL_CLASS_OPS = {"get": "GetItem", "query": "Query", "scan": "Scan", "count": "Query",
                   "batch_write": "BatchWriteItem", "batch_get": "BatchGetItem", "exists": "DescribeTable",
                   "describe_table": "DescribeTable", "create_table": "CreateTable", "delete_table": "DeleteTable",
                   "update_ttl": "UpdateTimeToLive"}
MODEL_INSTANCE_OPS = {"save": "PutItem", "update": "UpdateItem", "delete": "DeleteItem", "refresh": "GetItem"}
INDEX_OPS = {"query": "Query", "scan": "Scan", "count": "Query"}
TRANSACTION_OPS = {"save": "PutItem", "update": "UpdateItem", "delete": "DeleteItem",
                   "condition_check": "ConditionCheckItem", "get": "GetItem"}
TRANSACTIONS = {"pynamodb.transactions.TransactWrite", "pynamodb.transactions.TransactGet"}
# DynamoDB actions on items of one partition, which IAM's dynamodb:LeadingKeys condition key names.
# The test gives it the partition key the code writes literally (a constant), else a value no
# policy can name, so that a statement bound to a leading key allows only the calls that name it.
ITEM_ACTIONS = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                "dynamodb:ConditionCheckItem", "dynamodb:Query", "dynamodb:BatchWriteItem", "dynamodb:BatchGetItem"}
COMPUTED_KEY = "(a key the code computes)"
CLIENT_FACTORIES = {"chalicelib.platform.aws:client"}
SAFETY_NET_SERVICES = ("dynamodb", "kms", "sqs", "stepfunctions", "secretsmanager", "scheduler", "cloudformation",
                       "s3", "sns", "lambda", "sts", "ssm", "logs", "events", "iam", "ecr")
SETTINGS_CLASS = "chalicelib.platform.config.Settings"
# Route wrappers whose AWS calls only an HTTP request makes (see `analysis`).
HTTP_ONLY_WRAPPERS = ["chalicelib.platform.web:idempotent"]

# Step Functions service integrations -> (IAM action, the parameter naming the resource).
INTEGRATIONS = {
    "arn:aws:states:::dynamodb:getItem": ("dynamodb:GetItem", "TableName"),
    "arn:aws:states:::dynamodb:putItem": ("dynamodb:PutItem", "TableName"),
    "arn:aws:states:::dynamodb:updateItem": ("dynamodb:UpdateItem", "TableName"),
    "arn:aws:states:::dynamodb:deleteItem": ("dynamodb:DeleteItem", "TableName"),
    "arn:aws:states:::sqs:sendMessage": ("sqs:SendMessage", "QueueUrl"),
    "arn:aws:states:::sqs:sendMessage.waitForTaskToken": ("sqs:SendMessage", "QueueUrl"),
    "arn:aws:states:::states:startExecution": ("states:StartExecution", "StateMachineArn"),
}


@lru_cache(maxsize=1)
def template() -> dict:
    return load_template()


def resource(logical_id: str) -> dict:
    return template()["Resources"][logical_id]


def physical_name(logical_id: str) -> str:
    """The name CloudFormation gives a resource (its explicit name, or a generated one)."""
    if logical_id in CHALICE_FUNCTIONS.values():
        return f"{STACK}-{logical_id}-{SUFFIX}"
    kind, props = resource(logical_id)["Type"], resource(logical_id).get("Properties", {})
    for key in ("TableName", "QueueName", "Name", "RoleName", "StateMachineName", "FunctionName"):
        if isinstance(props.get(key), str):
            return props[key]
    if kind in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"):
        return f"{logical_id}-{SUFFIX}"
    if kind == "AWS::S3::Bucket":
        return f"{STACK}-{logical_id}-{SUFFIX}".lower()  # S3 names are lower case
    return f"{STACK}-{logical_id}-{SUFFIX}"


def arn(logical_id: str) -> str:
    """The ARN of a template resource (or of a Chalice function) in the modelled deployment."""
    if logical_id in CHALICE_FUNCTIONS.values():
        return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{physical_name(logical_id)}"
    kind = resource(logical_id)["Type"]
    name = physical_name(logical_id)
    prefix = {"AWS::DynamoDB::Table": "dynamodb", "AWS::SQS::Queue": "sqs", "AWS::KMS::Key": "kms",
              "AWS::SecretsManager::Secret": "secretsmanager", "AWS::Serverless::StateMachine": "states",
              "AWS::StepFunctions::StateMachine": "states", "AWS::Scheduler::ScheduleGroup": "scheduler",
              "AWS::Serverless::Function": "lambda", "AWS::Lambda::Function": "lambda",
              "AWS::ECS::Cluster": "ecs", "AWS::ECS::TaskDefinition": "ecs", "AWS::Logs::LogGroup": "logs"}.get(kind)
    base = f"arn:{PARTITION}:{prefix}:{REGION}:{ACCOUNT}"
    return {
        "AWS::DynamoDB::Table": f"{base}:table/{name}",
        "AWS::SQS::Queue": f"{base}:{name}",
        "AWS::KMS::Key": f"{base}:key/{KEY_ID}",
        "AWS::SecretsManager::Secret": f"{base}:secret:{name}-AbC1d2",
        "AWS::Serverless::StateMachine": f"{base}:stateMachine:{name}",
        "AWS::StepFunctions::StateMachine": f"{base}:stateMachine:{name}",
        "AWS::Scheduler::ScheduleGroup": f"{base}:schedule-group/{name}",
        "AWS::IAM::Role": f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}",
        "AWS::Serverless::Function": f"{base}:function:{name}",
        "AWS::Lambda::Function": f"{base}:function:{name}",
        "AWS::S3::Bucket": f"arn:{PARTITION}:s3:::{name}",
        "AWS::ECS::Cluster": f"{base}:cluster/{name}",
        "AWS::ECS::TaskDefinition": f"{base}:task-definition/{name}:1",
        "AWS::Logs::LogGroup": f"{base}:log-group:{name}:*",
    }[kind]


def only(kind: str) -> str:
    found = [key for key, value in template()["Resources"].items() if value["Type"] == kind]
    assert len(found) == 1, f"the test models one {kind}, the template has {found}"
    return found[0]


def key_aliases(key_logical_id: str) -> list[str]:
    return [resolve(value["Properties"]["AliasName"]) for value in template()["Resources"].values()
            if value["Type"] == "AWS::KMS::Alias" and value["Properties"].get("TargetKeyId") == {"Ref": key_logical_id}]


def resolve(value: Any) -> Any:
    """Intrinsic functions of the (translated) template, evaluated in the modelled deployment."""
    if isinstance(value, list):
        return [resolve(item) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        name = value["Ref"]
        pseudo = {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                  "AWS::StackName": STACK, "AWS::StackId": STACK_ID}
        if name in pseudo:
            return pseudo[name]
        if name == "WorkerImageUri":
            return WORKER_IMAGE_URI
        kind = resource(name)["Type"]
        if kind == "AWS::KMS::Key":
            return KEY_ID
        if kind == "AWS::KMS::Alias":
            return resolve(resource(name)["Properties"]["AliasName"])
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical_name(name)}"
        if kind in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine", "AWS::SecretsManager::Secret",
                    "AWS::ECS::TaskDefinition"):
            return arn(name)
        return physical_name(name)
    if set(value) == {"Fn::GetAtt"}:
        target = value["Fn::GetAtt"]
        name, attribute = target if isinstance(target, list) else target.split(".", 1)
        if attribute == "Arn":
            return arn(name)
        if attribute in ("QueueName", "Name"):
            return physical_name(name)
        raise AssertionError(f"teach the test Fn::GetAtt {name}.{attribute}")
    if set(value) == {"Fn::Sub"}:
        text, variables = (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]

        def substitute(match: re.Match) -> str:
            ref = match.group(1)
            if ref in variables:
                return str(resolve(variables[ref]))
            if "." in ref:
                return str(resolve({"Fn::GetAtt": ref.split(".", 1)}))
            return str(resolve({"Ref": ref}))

        return re.sub(r"\$\{([^}!]+)\}", substitute, text)
    if set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        return separator.join(str(resolve(part)) for part in parts)
    if set(value) == {"Fn::Split"}:
        separator, text = value["Fn::Split"]
        return str(resolve(text)).split(separator)
    if set(value) == {"Fn::Select"}:
        index, items = value["Fn::Select"]
        return resolve(items)[int(index)]
    return {key: resolve(item) for key, item in value.items()}


@lru_cache(maxsize=1)
def translated() -> dict:
    """infra/template.yaml as SAM translates it (offline: no managed policy is looked up)."""
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    sam = load_template()
    for props in (value["Properties"] for value in sam["Resources"].values()
                  if value["Type"] == "AWS::Serverless::StateMachine"):
        if "DefinitionUri" in props:  # a local file: SAM would want it uploaded first
            props["Definition"] = json.loads((TEMPLATE_PATH.parent / props.pop("DefinitionUri")).read_text())
    parameters = {name: spec.get("Default", "placeholder") for name, spec in sam.get("Parameters", {}).items()}
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    return translator.translate(sam, parameter_values=parameters, get_managed_policy_map=lambda: {})


def role_of(logical_id: str) -> dict:
    """The IAM role resource a translated function, state machine or task definition runs with."""
    props = translated()["Resources"][logical_id]["Properties"]
    reference = props.get("Role") or props.get("RoleArn") or props.get("TaskRoleArn")
    assert isinstance(reference, dict) and "Fn::GetAtt" in reference, f"{logical_id} has no role of the template"
    return translated()["Resources"][reference["Fn::GetAtt"][0]]


def role_statements(role: dict) -> list[dict]:
    assert not role["Properties"].get("ManagedPolicyArns"), "a managed policy grants what no test sees"
    return [statement for policy in role["Properties"].get("Policies", [])
            for statement in resolve(policy["PolicyDocument"])["Statement"]]


def chalice_policy_file(function: str) -> Path:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    scoped = Config(chalice_stage="dev", function_name=function, config_from_disk=config)
    assert not scoped.autogen_policy, "autogen_policy grants whatever Chalice guesses"
    assert scoped.iam_policy_file, f"{function} has no iam_policy_file of its own"
    return ROOT / ".chalice" / scoped.iam_policy_file


def policy_file_statements(path: Path) -> list[dict]:
    """A Chalice policy file's statements in the modelled deployment (`make package` makes each
    `${...}` string an Fn::Sub of the stack's own resources)."""
    role = {"Type": "AWS::IAM::Role", "Properties": {"Policies": [
        {"PolicyName": path.stem, "PolicyDocument": json.loads(path.read_text())}]}}
    scope_policies({"Resources": {"Role": role}})
    return resolve(role["Properties"]["Policies"][0]["PolicyDocument"])["Statement"]


def policy(function: str) -> list[dict]:
    """The statements of a function's (or a state machine's) own policy."""
    if function in CHALICE_FUNCTIONS:
        return policy_file_statements(chalice_policy_file(function))
    return role_statements(role_of(function))


# --- settings: which template resource a setting names ---------------------------------------

@lru_cache(maxsize=1)
def setting_env_vars() -> dict[str, str]:
    """Settings field -> the environment variable it is read from (Settings.from_environ)."""
    tree = ast.parse((ROOT / "chalicelib/platform/config.py").read_text())
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "cls":
            for keyword in node.keywords:
                names = [item.value for item in ast.walk(keyword.value) if isinstance(item, ast.Constant)
                         and isinstance(item.value, str) and re.fullmatch(r"(RUNNER|AWS)_[A-Z_]+", item.value)]
                if keyword.arg and names:
                    found[keyword.arg] = names[0]
    return found


def setting_target(setting: str) -> str | None:
    """The logical id (or pseudo parameter) a setting names through the template's Globals."""
    variable = setting_env_vars().get(setting)
    value = template()["Globals"]["Function"]["Environment"]["Variables"].get(variable)
    if isinstance(value, dict) and "Ref" in value:
        return value["Ref"]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return value["Fn::GetAtt"][0]
    return None


# --- the static analysis -----------------------------------------------------------------------

@dataclass(eq=False)
class Module:
    name: str
    tree: ast.Module
    defs: dict[str, Any] = field(default_factory=dict)  # top-level name -> Func | Klass
    imports: dict[str, tuple] = field(default_factory=dict)
    assigns: dict[str, ast.expr] = field(default_factory=dict)


@dataclass(eq=False)
class Func:
    key: str
    module: Module
    node: Any
    klass: "Klass | None" = None
    body: list | None = None  # a module's own code: its statements and decorators

    @property
    def kind(self) -> str:
        decorators = {getattr(d, "id", getattr(d, "attr", None)) for d in getattr(self.node, "decorator_list", [])}
        for kind in ("staticmethod", "classmethod", "property"):
            if kind in decorators:
                return kind
        return "method" if self.klass else "function"

    def params(self) -> list[str]:
        args = self.node.args
        names = [a.arg for a in args.posonlyargs + args.args]
        return names[1:] if self.kind in ("method", "classmethod", "property") else names

    def nodes(self) -> Iterable[ast.AST]:
        if self.body is not None:
            for statement in self.body:
                yield from ast.walk(statement)
        else:
            yield from ast.walk(self.node)


@dataclass(eq=False)
class Klass:
    key: str
    module: Module
    node: ast.ClassDef
    methods: dict[str, Func] = field(default_factory=dict)
    fields: dict[str, ast.expr] = field(default_factory=dict)  # class-level annotations, in order


@dataclass
class Call:
    """One AWS call a function can make."""

    action: str
    resources: list[str]
    where: str
    context: dict = field(default_factory=dict)


class Program:
    """The modules a function ships with, indexed."""

    def __init__(self, files: list[Path]) -> None:
        self.modules: dict[str, Module] = {}
        self.funcs: dict[str, Func] = {}
        self.classes: dict[str, Klass] = {}
        for path in files:
            relative = path.relative_to(ROOT).with_suffix("")
            name = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
            self.modules[name] = Module(name, ast.parse(path.read_text(encoding="utf-8"), str(path)))
        for module in self.modules.values():
            self._index(module)
        self.models = {f"{model.__module__}.{model.__name__}": model for model in MODELS}

    def _index(self, module: Module) -> None:
        body: list = []
        for node in module.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                func = Func(f"{module.name}:{node.name}", module, node)
                module.defs[node.name] = self.funcs[func.key] = func
                body += node.decorator_list
            elif isinstance(node, ast.ClassDef):
                klass = Klass(f"{module.name}.{node.name}", module, node)
                module.defs[node.name] = self.classes[klass.key] = klass
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        method = Func(f"{module.name}:{node.name}.{item.name}", module, item, klass)
                        klass.methods[item.name] = self.funcs[method.key] = method
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        klass.fields[item.target.id] = item.annotation
                body += node.decorator_list
            else:
                body.append(node)
                self._imports(module, node, module.imports)
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    module.assigns[node.targets[0].id] = node.value
        self.funcs[f"{module.name}:<module>"] = Func(f"{module.name}:<module>", module, module.tree, body=body)

    @staticmethod
    def _imports(module: Module, node: ast.AST, into: dict) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                into[alias.asname or alias.name.split(".")[0]] = ("module", alias.name if alias.asname else
                                                                  alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                into[alias.asname or alias.name] = ("symbol", node.module, alias.name)

    def constant(self, module: Module, node: ast.AST | None, seen: frozenset = frozenset()) -> str | None:
        """The value of a string literal, or of a module-level name bound to one (imported or not)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if not isinstance(node, ast.Name) or (module.name, node.id) in seen:
            return None
        seen = seen | {(module.name, node.id)}
        if node.id in module.assigns:
            return self.constant(module, module.assigns[node.id], seen)
        imported = module.imports.get(node.id)
        if imported is not None and imported[0] == "symbol" and imported[1] in self.modules:
            return self.constant(self.modules[imported[1]], ast.Name(imported[2], ast.Load()), seen)
        return None

    def mro(self, klass: Klass) -> list[Klass]:
        found, queue = [], [klass]
        while queue:
            current = queue.pop(0)
            if current in found:
                continue
            found.append(current)
            for base in current.node.bases:
                for kind in self.lookup(current.module, getattr(base, "id", None) or "", set()):
                    if kind[0] == "cls":
                        queue.append(self.classes[kind[1]])
        return found

    def method(self, class_key: str, name: str) -> Func | None:
        for klass in self.mro(self.classes[class_key]):
            if name in klass.methods:
                return klass.methods[name]
        return None

    def lookup(self, module: Module, name: str, seen: set) -> set:
        """What a module-level name is: a class, a function, a module, something foreign."""
        if (module.name, name) in seen:
            return set()
        seen = seen | {(module.name, name)}
        target = module.defs.get(name)
        if isinstance(target, Klass):
            return {("cls", target.key)}
        if isinstance(target, Func):
            return {("func", target.key)}
        imported = module.imports.get(name)
        if imported is not None:
            return self.imported(imported, seen)
        return set()

    def imported(self, imported: tuple, seen: set) -> set:
        if imported[0] == "module":
            return {("module", imported[1])} if imported[1] in self.modules else {("ext", imported[1])}
        source, name = imported[1], imported[2]
        if f"{source}.{name}" in self.modules:
            return {("module", f"{source}.{name}")}
        if source in self.modules:
            return self.lookup(self.modules[source], name, seen)
        return {("ext", f"{source}.{name}")}


class Analysis:
    """Everything reachable from a function's entry points, and the AWS calls in it."""

    def __init__(self, program: Program, entries: list[str], elsewhere: Iterable[str] = ()) -> None:
        self.program = program
        self.elsewhere = set(elsewhere)  # entry points of other functions: never run here
        self.params: dict[tuple, set] = defaultdict(set)
        self.attrs: dict[tuple, set] = defaultdict(set)
        self.returns: dict[str, set] = defaultdict(set)
        self.reached: dict[str, Func] = {key: program.funcs[key] for key in entries}
        self.reached_by: dict[str, str | None] = {key: None for key in entries}
        self.calls: dict[tuple, Call] = {}
        self.unresolved: set[str] = set()
        # Operation names of the services used, and of those most likely to be next: a call of
        # one of them on a value of unknown type is reported, not skipped.
        self.op_names = {xform_name(op) for service in SAFETY_NET_SERVICES
                         for op in service_model(service).operation_names}
        self.recording = False
        for _ in range(50):  # to a fixpoint: what is reached, and what every value may be
            before = self._size()
            for func in list(self.reached.values()):
                self._visit(func)
            if self._size() == before:
                break
        else:
            raise AssertionError("the analysis does not settle")
        self.recording = True  # then once more, noting the calls with everything known
        for func in list(self.reached.values()):
            self._visit(func)
        assert self._size()[:4] == before[:4], "the analysis had not settled"

    def _size(self) -> tuple:
        return (len(self.reached), sum(map(len, self.params.values())), sum(map(len, self.attrs.values())),
                sum(map(len, self.returns.values())), len(self.calls), len(self.unresolved))

    # -- types ---------------------------------------------------------------------------------

    def annotation(self, node: ast.expr | None, module: Module) -> set:
        if node is None:
            return set()
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return self.annotation(ast.parse(node.value, mode="eval").body, module)
        if isinstance(node, ast.BinOp):
            return self.annotation(node.left, module) | self.annotation(node.right, module)
        if isinstance(node, ast.Subscript):
            base = getattr(node.value, "id", getattr(node.value, "attr", ""))
            inner = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            types = set().union(*(self.annotation(item, module) for item in inner))
            if base in ("list", "List", "Iterable", "Iterator", "Sequence", "set", "frozenset", "tuple"):
                return {("iter", kind) for kind in types}
            return types if base == "Optional" else set()
        kinds = self.expr(node, None, module, {})
        return {("inst", kind[1]) if kind[0] == "cls" else kind for kind in kinds if kind[0] in ("cls", "ext")}

    def expr(self, node: ast.AST, func: Func | None, module: Module, env: dict) -> set:
        """The abstract values an expression may have."""
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            found = self.program.lookup(module, node.id, set())
            if not found and node.id in module.assigns:
                return self.expr(module.assigns[node.id], None, module, {})
            return found
        if isinstance(node, ast.Attribute):
            return set().union(*(self.attribute(kind, node.attr) for kind in self.expr(node.value, func, module, env)))
        if isinstance(node, ast.Call):
            return set().union(*(self.result(kind, node, func, module, env)
                                 for kind in self.expr(node.func, func, module, env)))
        if isinstance(node, ast.Dict):
            if node.keys and all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys):
                # The keys, and the values the code writes literally.
                values = {k.value: self.literal(v, module, env) for k, v in zip(node.keys, node.values)}
                return {("ctx", frozenset(values), frozenset((k, v) for k, v in values.items() if v is not None))}
            return set()
        if isinstance(node, ast.JoinedStr):
            return {kind for part in node.values if isinstance(part, ast.FormattedValue)
                    for kind in self.expr(part.value, func, module, env) if kind[0] == "setting"}
        if isinstance(node, ast.IfExp):
            return self.expr(node.body, func, module, env) | self.expr(node.orelse, func, module, env)
        if isinstance(node, ast.BoolOp):
            return set().union(*(self.expr(value, func, module, env) for value in node.values))
        if isinstance(node, ast.Subscript):
            return {kind[1] for kind in self.expr(node.value, func, module, env) if kind[0] == "iter"}
        return set()

    def literal(self, node: ast.AST, module: Module, env: dict) -> str | None:
        """A string the code writes literally (a constant, not a local variable of the same name)."""
        if isinstance(node, ast.Name) and node.id in env:
            return None
        return self.program.constant(module, node)

    def attribute(self, kind: tuple, name: str) -> set:
        tag = kind[0]
        if tag == "module":
            return self.program.lookup(self.program.modules[kind[1]], name, set())
        if tag == "ext":
            return {("ext", f"{kind[1]}.{name}")}
        if tag == "client":
            return {("clientop", kind[1], name)}
        if tag == "setting":
            return {("settingop", kind[1])}  # str methods: still the setting's value
        if tag == "transact":
            return {("transactop", name)}
        if tag == "index":
            return {("indexop", kind[1], name)}
        if tag in ("inst", "cls"):
            key = kind[1]
            if key in self.program.models:
                model = self.program.models[key]
                if isinstance(getattr(model, name, None), Index):
                    return {("index", key)}
                if tag == "cls" and name in MODEL_CLASS_OPS:
                    return {("modelop", key, name)}
                if tag == "inst" and name in MODEL_INSTANCE_OPS:
                    return {("modelop", key, name)}
            method = self.program.method(key, name)
            if method is not None:
                if method.kind == "property" and tag == "inst":
                    self._reach(method)
                    return self.returns[method.key]
                return {("method", method.key)}
            if tag == "inst" and key == SETTINGS_CLASS:
                return {("setting", name)}
            found = set(self.attrs[(key, name)])
            for klass in self.program.mro(self.program.classes[key]):
                if name in klass.fields:
                    found |= self.annotation(klass.fields[name], klass.module)
            return found
        return set()

    def result(self, kind: tuple, call: ast.Call, func: Func | None, module: Module, env: dict) -> set:
        tag = kind[0]
        if tag == "cls":
            key = kind[1]
            init = self.program.method(key, "__init__")
            if init is not None:
                self._flow(init, call, func, module, env)
                self._reach(init, func)
            else:  # a dataclass: its fields, in order
                names = list(self.program.classes[key].fields)
                for name, arg in zip(names, call.args):
                    self.attrs[(key, name)] |= self.expr(arg, func, module, env)
                for keyword in call.keywords:
                    if keyword.arg:
                        self.attrs[(key, keyword.arg)] |= self.expr(keyword.value, func, module, env)
            return {("inst", key)}
        if tag in ("func", "method"):
            target = self.program.funcs[kind[1]]
            if target.key in CLIENT_FACTORIES:
                service = call.args[0] if call.args else None
                if isinstance(service, ast.Constant):
                    return {("client", service.value)}
                self.unresolved.add(f"{where(func, call)}: a client of a service not named literally")
                return set()
            self._flow(target, call, func, module, env)
            self._reach(target, func)
            return self.returns[target.key]
        if tag == "ext" and kind[1] in TRANSACTIONS:
            return {("transact",)}
        if tag == "ext":
            return {("ext", f"{kind[1]}()")}
        if tag == "settingop":
            return {("setting", kind[1])}
        if tag == "modelop":
            model, name = kind[1], kind[2]
            return {"get": {("inst", model)}, "query": {("iter", ("inst", model))},
                    "scan": {("iter", ("inst", model))}, "batch_write": {("batch", model)}}.get(name, set())
        if tag == "indexop":
            return {("iter", ("inst", kind[1]))}
        return set()

    def _flow(self, target: Func, call: ast.Call, func: Func | None, module: Module, env: dict) -> None:
        params = target.params()
        for name, arg in zip(params, call.args):
            if not isinstance(arg, ast.Starred):
                self.params[(target.key, name)] |= self.expr(arg, func, module, env)
        for keyword in call.keywords:
            if keyword.arg in params:
                self.params[(target.key, keyword.arg)] |= self.expr(keyword.value, func, module, env)

    def _reach(self, func: Func, by: Func | None = None) -> None:
        if func.key not in self.reached and func.key not in self.elsewhere:
            self.reached[func.key] = func
            self.reached_by[func.key] = by.key if by else None

    # -- one function --------------------------------------------------------------------------

    def env(self, func: Func) -> dict:
        module = func.module
        env: dict[str, set] = defaultdict(set)
        if func.body is None:
            own = func.node.args
            if func.klass is not None and func.kind in ("method", "property") and own.args:
                env[own.args[0].arg].add(("inst", func.klass.key))
            if func.klass is not None and func.kind == "classmethod" and own.args:
                env[own.args[0].arg].add(("cls", func.klass.key))
            for name in func.params():
                env[name] |= self.params[(func.key, name)]
        for _ in range(3):
            for node in func.nodes():
                if isinstance(node, ast.arguments):
                    every = node.posonlyargs + node.args + node.kwonlyargs
                    for arg in every:
                        env[arg.arg] |= self.annotation(arg.annotation, module)
                    for arg, default in zip(reversed(node.args), reversed(node.defaults)):
                        env[arg.arg] |= self.expr(default, func, module, env)
                    for arg, default in zip(node.kwonlyargs, node.kw_defaults):
                        if default is not None:
                            env[arg.arg] |= self.expr(default, func, module, env)
                elif isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            env[target.id] |= self.expr(node.value, func, module, env)
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    env[node.target.id] |= self.annotation(node.annotation, module)
                    if node.value is not None:
                        env[node.target.id] |= self.expr(node.value, func, module, env)
                elif isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Name):
                    env[node.target.id] |= {kind[1] for kind in self.expr(node.iter, func, module, env)
                                            if kind[0] == "iter"}
                elif isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name):
                    env[node.optional_vars.id] |= self.expr(node.context_expr, func, module, env)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    local: dict = {}
                    Program._imports(module, node, local)
                    for name, imported in local.items():
                        env[name] |= self.program.imported(imported, set())
        return env

    def _visit(self, func: Func) -> None:
        module, env = func.module, self.env(func)
        for node in func.nodes():
            if isinstance(node, ast.Assign) and func.klass is not None:
                for target in node.targets:
                    if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                            and ("inst", func.klass.key) in env.get(target.value.id, ())):
                        self.attrs[(func.klass.key, target.attr)] |= self.expr(node.value, func, module, env)
            elif isinstance(node, ast.Return) and node.value is not None and func.body is None:
                self.returns[func.key] |= self.expr(node.value, func, module, env)
            elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
                for kind in self.expr(node, func, module, env):  # functions passed as values
                    if kind[0] in ("func", "method") and kind[1] not in CLIENT_FACTORIES:
                        self._reach(self.program.funcs[kind[1]], func)
            elif isinstance(node, ast.Call):
                self.expr(node, func, module, env)  # its arguments flow into the callee
                if self.recording:
                    self._aws_call(node, func, module, env)
        if func.body is None and func.node.returns is not None:
            self.returns[func.key] |= self.annotation(func.node.returns, module)

    # -- the AWS calls -------------------------------------------------------------------------

    def _aws_call(self, call: ast.Call, func: Func, module: Module, env: dict) -> None:
        if not isinstance(call.func, ast.Attribute):
            return
        name = call.func.attr
        receiver = self.expr(call.func.value, func, module, env)
        at = where(func, call)
        for kind in receiver:
            if kind[0] == "client":
                self._client_call(kind[1], name, call, func, module, env, at)
            elif kind[0] in ("cls", "inst") and kind[1] in self.program.models:
                ops = MODEL_CLASS_OPS if kind[0] == "cls" else MODEL_INSTANCE_OPS
                if name in ops:
                    action = f"dynamodb:{ops[name]}"
                    # Model.get(KEY), Model.query(KEY): the call's first argument; Model(KEY, ...).save():
                    # the constructor's, when the item is made where it is written.
                    made = call.func.value
                    keyed = call if kind[0] == "cls" else made if (
                        isinstance(made, ast.Call) and ("cls", kind[1]) in self.expr(made.func, func, module, env)) else None
                    leading = self.literal(keyed.args[0], module, env) if keyed is not None and keyed.args else None
                    self._record(action, [arn(MODELS[self.program.models[kind[1]]])], at, leading_keys(action, leading))
            elif kind[0] == "index" and name in INDEX_OPS:
                model = self.program.models[kind[1]]
                index = {i.Meta.index_name for i in model._indexes.values()}
                action = f"dynamodb:{INDEX_OPS[name]}"
                self._record(action, [f"{arn(MODELS[model])}/index/{i}" for i in index], at, leading_keys(action, None))
            elif kind[0] == "transact" and name in TRANSACTION_OPS:
                items = self.expr(call.args[0], func, module, env) if call.args else set()
                tables = [arn(MODELS[self.program.models[item[1]]]) for item in items
                          if item[0] in ("cls", "inst") and item[1] in self.program.models]
                if not tables:
                    self.unresolved.add(f"{at}: a transaction's {name} of an item of unknown model")
                action = f"dynamodb:{TRANSACTION_OPS[name]}"
                self._record(action, tables, at, leading_keys(action, None))
        if receiver:
            return
        # Nothing known of the receiver: it must not be an AWS call.
        text = ast.unparse(call.func)
        if name in self.op_names:
            self.unresolved.add(f"{at}: {text}(...) looks like an AWS call on a receiver of unknown type")
        elif (name in ("save", "delete", "refresh") and not call.args) or (
                name == "update" and any(keyword.arg == "actions" for keyword in call.keywords)):
            self.unresolved.add(f"{at}: {text}(...) looks like a PynamoDB write on a value of unknown model")
        elif name in ("query", "scan", "batch_write", "condition_check"):
            self.unresolved.add(f"{at}: {text}(...) looks like a PynamoDB call on a value of unknown model")

    def _client_call(self, service: str, name: str, call: ast.Call, func: Func, module: Module, env: dict,
                     at: str) -> None:
        try:
            model = service_model(service)
        except botocore.exceptions.UnknownServiceError:
            self.unresolved.add(f"{at}: a client of an unknown service {service!r}")
            return
        ops = {xform_name(op): op for op in model.operation_names}
        if name == "get_paginator" and call.args and isinstance(call.args[0], ast.Constant):
            name = call.args[0].value
        elif name in ("meta", "exceptions", "can_paginate", "close", "get_waiter"):
            return
        if name not in ops:
            self.unresolved.add(f"{at}: {service}.{name} is not an operation of {service}")
            return
        action = f"{IAM_PREFIX.get(service, service)}:{ops[name]}"
        action = ACTION_OF.get(action, action)
        arguments = {keyword.arg: keyword.value for keyword in call.keywords if keyword.arg}
        context: dict = {}
        if action in STAR_ONLY:
            resources = ["*"]
        elif service == "kms":
            key = only("AWS::KMS::Key")
            resources = [arn(key)]
            contexts = {kind[1:] for kind in self.expr(arguments["EncryptionContext"], func, module, env)
                        if kind[0] == "ctx"} if "EncryptionContext" in arguments else set()
            if not contexts:
                self.unresolved.add(f"{at}: {action} with an encryption context the test cannot tell")
            for keys, literal in contexts:
                # A value the code computes (an account alias, a job id) as a placeholder.
                values = {k: "value" for k in keys} | dict(literal)
                self._record(action, resources, at, {
                    "kms:EncryptionContextKeys": sorted(keys), "kms:ResourceAliases": key_aliases(key),
                    **{f"kms:EncryptionContext:{k}": v for k, v in values.items()}})
            return
        elif service == "scheduler":
            resources = [f"arn:{PARTITION}:scheduler:{REGION}:{ACCOUNT}:schedule/"
                         f"{physical_name(only('AWS::Scheduler::ScheduleGroup'))}/a-schedule"]
            if action in PASSES_ROLE:
                role = setting_target(PASSES_ROLE[action])
                self._record("iam:PassRole", [arn(role)], at, {"iam:PassedToService": "scheduler.amazonaws.com"})
        elif service == "cloudformation":
            assert setting_target("stack_name") == "AWS::StackName"
            resources = [STACK_ID]
        elif service == "s3":
            # An object: the bucket a setting names, and the key's literal prefix (an f-string's
            # leading constant, or a module constant), so that a policy bound to a prefix is checked.
            settings = {kind[1] for kind in self.expr(arguments["Bucket"], func, module, env)
                        if kind[0] == "setting"} if "Bucket" in arguments else set()
            targets = {setting_target(setting) for setting in settings} - {None}
            if not targets:
                self.unresolved.add(f"{at}: {action} on a bucket the test cannot tell")
            prefix = self.key_prefix(arguments.get("Key"), module, env)
            resources = sorted(f"{arn(target)}/{prefix}an-object" if prefix else f"{arn(target)}/{COMPUTED_KEY}"
                               for target in targets)
        elif action not in RESOURCE_ARG and service not in RESOURCE_ARG:
            self.unresolved.add(f"{at}: {action}: the test knows no resource of it; teach the test")
            return
        else:
            argument = RESOURCE_ARG.get(action, RESOURCE_ARG.get(service))
            settings = {kind[1] for kind in self.expr(arguments[argument], func, module, env)
                        if kind[0] == "setting"} if argument in arguments else set()
            targets = {setting_target(setting) for setting in settings} - {None}
            if not targets:
                self.unresolved.add(f"{at}: {action} on a resource the test cannot tell (argument {argument})")
            resources = sorted(arn(target) for target in targets)
            if action == "states:DescribeExecution":
                resources = [f"{r.replace(':stateMachine:', ':execution:', 1)}:an-execution-1" for r in resources]
            for key, name in CONTEXT_ARG.get(action, {}).items():
                values = {arn(target) for kind in (self.expr(arguments[name], func, module, env) if name in arguments
                                                   else set()) if kind[0] == "setting"
                          for target in [setting_target(kind[1])] if target is not None}
                if len(values) != 1:
                    self.unresolved.add(f"{at}: {action}'s {name} (condition key {key}) the test cannot tell")
                    continue
                context[key] = values.pop()
            if action == "ecs:RunTask":
                # ECS checks iam:PassRole on the roles of the task definition it starts.
                for target in targets:
                    props = resource(target)["Properties"]
                    roles = [resolve(props[key]) for key in ("TaskRoleArn", "ExecutionRoleArn") if key in props]
                    self._record("iam:PassRole", roles, at, {"iam:PassedToService": "ecs-tasks.amazonaws.com"})
        self._record(action, resources, at, context)

    def key_prefix(self, node: ast.expr | None, module: Module, env: dict) -> str:
        """The literal start of an S3 key: a constant, or an f-string's leading constants."""
        if isinstance(node, ast.JoinedStr):
            prefix = ""
            for part in node.values:
                value = self.literal(part.value, module, env) if isinstance(part, ast.FormattedValue) else (
                    part.value if isinstance(part, ast.Constant) else None)
                if value is None:
                    return prefix
                prefix += value
            return prefix
        return (self.literal(node, module, env) or "") if node is not None else ""

    def _record(self, action: str, resources: list[str], at: str, context: dict | None = None) -> None:
        context = context or {}
        key = (action, tuple(resources), json.dumps(context, sort_keys=True), at)
        self.calls.setdefault(key, Call(action, resources, at, context))


def leading_keys(action: str, key: str | None) -> dict:
    """The dynamodb:LeadingKeys of an item call: the partition key the code names, else one no policy names."""
    return {"dynamodb:LeadingKeys": [key or COMPUTED_KEY]} if action in ITEM_ACTIONS else {}


@lru_cache(maxsize=None)
def service_model(service: str) -> Any:
    return botocore_session().get_service_model(service)


@lru_cache(maxsize=1)
def botocore_session() -> Any:
    return botocore.session.get_session()


def where(func: Func | None, node: ast.AST) -> str:
    return f"{func.key if func else '?'} line {getattr(node, 'lineno', '?')}"


def sources(*tops: str) -> list[Path]:
    files: list[Path] = []
    for top in tops:
        path = ROOT / top
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


@lru_cache(maxsize=None)
def chalice_program() -> Program:
    return Program(sources("app.py", "chalicelib"))  # what `chalice package` ships


@lru_cache(maxsize=None)
def worker_program() -> Program:
    return Program(sources("runner_lambda", "chalicelib"))  # what runner_lambda/Dockerfile copies


def app_decorators() -> dict[str, list[ast.Call]]:
    """app.py's functions -> the decorator calls on them."""
    module = chalice_program().modules["app"]
    return {node.name: [d for d in node.decorator_list if isinstance(d, ast.Call)]
            for node in module.tree.body if isinstance(node, ast.FunctionDef)}


def chalice_function_name(function: str, decorators: list[ast.Call]) -> str | None:
    """The Chalice function a decorated app.py function is part of."""
    for decorator in decorators:
        called = decorator.func
        name = getattr(called, "attr", getattr(called, "id", None))
        if name == "route":
            return "api_handler"
        if name in ("authorizer", "lambda_function", "schedule", "on_sqs_message", "on_sns_message",
                    "on_s3_event", "on_cw_event", "on_ws_message", "on_dynamodb_record", "on_kinesis_record"):
            named = [k.value.value for k in decorator.keywords if k.arg == "name" and isinstance(k.value, ast.Constant)]
            return named[0] if named else function
    return None


@lru_cache(maxsize=None)
def analysis(function: str) -> Analysis:
    if function == WORKER:
        return Analysis(worker_program(), ["runner_lambda.handler:handler", "runner_lambda.handler:<module>"])
    if function == FARGATE_TASK:
        return Analysis(worker_program(), ["runner_lambda.fargate:main", "runner_lambda.fargate:<module>"])
    owners = {f"app:{name}": chalice_function_name(name, decorators) for name, decorators in app_decorators().items()}
    entries = [key for key, owner in owners.items() if owner == function]
    assert entries, f"no entry point of {function} in app.py"
    elsewhere = [key for key, owner in owners.items() if owner not in (None, function)]
    if function != "api_handler":
        # app.route wraps views in these when app.py is imported (by every function), but only an
        # HTTP request runs what they wrap in: the API's code, not the other functions'.
        elsewhere += HTTP_ONLY_WRAPPERS
    return Analysis(chalice_program(), entries + ["app:<module>"], elsewhere)


def log_calls(logical_id: str) -> list[Call]:
    group = f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{physical_name(logical_id)}"
    return [Call("logs:CreateLogGroup", [group], "Lambda"),
            Call("logs:CreateLogStream", [f"{group}:log-stream:2026/01/02/[$LATEST]0123456789abcdef"], "Lambda"),
            Call("logs:PutLogEvents", [f"{group}:log-stream:2026/01/02/[$LATEST]0123456789abcdef"], "Lambda")]


def event_source_calls(function: str) -> list[Call]:
    """What Lambda's SQS poller does with the function's role."""
    queues: list[str] = []
    if function == WORKER:
        queues = [resolve(value["Properties"]["EventSourceArn"]) for value in translated()["Resources"].values()
                  if value["Type"] == "AWS::Lambda::EventSourceMapping"
                  and value["Properties"]["FunctionName"] == {"Ref": WORKER}]
    else:
        for name, decorators in app_decorators().items():
            for decorator in decorators:
                if getattr(decorator.func, "attr", None) == "on_sqs_message" and \
                        chalice_function_name(name, [decorator]) == function:
                    queue = next(k.value.value for k in decorator.keywords if k.arg == "queue")
                    # The queue's logical id: `make package` binds the event source to its ARN.
                    assert resource(queue)["Type"] == "AWS::SQS::Queue", f"no queue {queue} in the template"
                    queues.append(arn(queue))
    return [Call(action, queues, "SQS event source") for action in EVENT_SOURCE_ACTIONS] if queues else []


def asl_calls(state_machine: str) -> list[Call]:
    """The service integrations of a state machine's definition, on the resources its input names."""
    inputs = workflow_inputs()
    definition = json.loads((TEMPLATE_PATH.parent / resource(state_machine)["Properties"]["DefinitionUri"]).read_text())
    calls: list[Call] = []

    def states(machine: dict) -> Iterable[tuple[str, dict]]:
        for name, state in machine.get("States", {}).items():
            yield name, state
            for branch in state.get("Branches", []):
                yield from states(branch)
            for key in ("Iterator", "ItemProcessor"):
                if key in state:
                    yield from states(state[key])

    for name, state in states(definition):
        if state.get("Type") != "Task":
            continue
        integration = state["Resource"]
        assert integration in INTEGRATIONS, f"{state_machine}.{name}: teach the test {integration}"
        action, parameter = INTEGRATIONS[integration]
        path = state.get("Parameters", {}).get(f"{parameter}.$")
        assert path and path.startswith("$.") and path[2:] in inputs, \
            f"{state_machine}.{name}: {parameter} must come from an input field the starter fills from the settings"
        calls.append(Call(action, sorted(arn(target) for target in inputs[path[2:]]), f"{state_machine}.{name}"))
    return calls


@lru_cache(maxsize=1)
def workflow_inputs() -> dict[str, set[str]]:
    """Input field of the workflows -> the template resources the starter may put there."""
    tree = ast.parse((ROOT / "chalicelib/executions/service.py").read_text())
    found: dict[str, set[str]] = {}

    def value_target(value: ast.expr) -> set[str] | None:
        if (isinstance(value, ast.Call) and getattr(value.func, "attr", None) == "table" and value.args
                and isinstance(value.args[0], ast.Constant)):
            return {value.args[0].value}
        if isinstance(value, ast.Attribute):
            target = setting_target(value.attr)
            return {target} if target is not None else None
        if isinstance(value, ast.IfExp):  # one resource or another (the run queue, the Fargate queue)
            either = [value_target(value.body), value_target(value.orelse)]
            return either[0] | either[1] if None not in either else None
        return None

    for node in ast.walk(tree):
        pairs: list[tuple[str, ast.expr]] = []
        if isinstance(node, ast.Dict):
            pairs = [(k.value, v) for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)]
        elif isinstance(node, ast.Call):
            pairs = [(k.arg, k.value) for k in node.keywords if k.arg]
        for name, value in pairs:
            target = value_target(value)
            if target is not None:
                found[name] = target
    return found


def required(function: str) -> list[Call]:
    """Every (action, resource) the function needs, with the request context of each."""
    if function in STATE_MACHINES:
        return asl_calls(function)
    if function == FARGATE_TASK:
        # Its message comes in its environment (no queue to poll); ECS writes its logs.
        return list(analysis(function).calls.values())
    logical_id = CHALICE_FUNCTIONS.get(function, function)
    return list(analysis(function).calls.values()) + log_calls(logical_id) + event_source_calls(function)


# --- policy evaluation -------------------------------------------------------------------------

def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def matches(pattern: str, value: str, case_sensitive: bool = True) -> bool:
    """IAM's wildcards: * any run of characters, ? one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


def condition_holds(condition: dict, context: dict) -> bool:
    for operator, block in condition.items():
        for key, wanted in block.items():
            wanted = [str(item) for item in as_list(wanted)]
            present = context.get(key)
            if operator == "Null":
                if (present is None) != (wanted[0] == "true"):
                    return False
                continue
            qualifier, _, base = operator.rpartition(":")
            assert base in ("StringEquals", "StringLike", "ArnEquals", "ArnLike"), f"teach the test {operator}"

            def one(value: str) -> bool:
                return any(value == w if base.endswith("Equals") else matches(w, value) for w in wanted)

            values = [str(item) for item in as_list(present)] if present is not None else []
            if qualifier == "ForAllValues":
                if not all(one(value) for value in values):
                    return False
            elif qualifier == "ForAnyValue":
                if not any(one(value) for value in values):
                    return False
            else:
                assert not qualifier, f"teach the test {operator}"
                if present is None or not all(one(value) for value in values):
                    return False
    return True


def allows(statements: list[dict], action: str, resource_arn: str, context: dict) -> bool:
    def applies(statement: dict) -> bool:
        return (any(matches(pattern, action, case_sensitive=False) for pattern in as_list(statement["Action"]))
                and any(matches(pattern, resource_arn) for pattern in as_list(statement["Resource"]))
                and condition_holds(statement.get("Condition", {}), context))

    if any(statement["Effect"] == "Deny" and applies(statement) for statement in statements):
        return False
    return any(statement["Effect"] == "Allow" and applies(statement) for statement in statements)


FUNCTIONS = [WORKER, FARGATE_TASK, *CHALICE_FUNCTIONS, *STATE_MACHINES]


def identity_policies() -> dict[str, list[dict]]:
    """Every identity policy of the service: the translated template's roles, the Chalice files."""
    found = {f".chalice/{path.name}": policy_file_statements(path)
             for path in sorted((ROOT / ".chalice").glob("policy-*.json"))}
    for logical_id, value in translated()["Resources"].items():
        if value["Type"] == "AWS::IAM::Role":
            found[logical_id] = role_statements(value)
    return found


# --- the tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("function", [WORKER, FARGATE_TASK, *CHALICE_FUNCTIONS])
def test_the_analysis_resolves_every_call(function):
    assert not analysis(function).unresolved, "\n".join(sorted(analysis(function).unresolved))


def reached_via(function: str, at: str) -> str:
    """How the analysis reached the code of a call, from the function's entry point."""
    if function in STATE_MACHINES or " line " not in at:
        return at
    chain, key = [], at.split(" line ")[0]
    while key is not None and key not in chain:
        chain.append(key)
        key = analysis(function).reached_by.get(key)
    return f"{at}, reached by " + " <- ".join(chain[1:]) if len(chain) > 1 else at


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_policy_allows_every_call_of_the_code(function):
    statements = policy(function)
    missing = [f"{call.action} on {resource_arn} (context {call.context}) at {reached_via(function, call.where)}"
               for call in required(function) for resource_arn in call.resources
               if not allows(statements, call.action, resource_arn, call.context)]
    assert not missing, f"{function}'s policy does not allow:\n" + "\n".join(missing)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_policy_allows_nothing_the_code_does_not_call(function):
    calls = required(function)
    unused = []
    for statement in policy(function):
        if statement["Effect"] != "Allow":
            continue
        for action in as_list(statement["Action"]):
            for pattern in as_list(statement["Resource"]):
                if not any(call.action.lower() == action.lower() and any(matches(pattern, r) for r in call.resources)
                           for call in calls):
                    unused.append(f"{statement.get('Sid', '?')}: {action} on {pattern}")
    assert not unused, f"{function}'s policy grants what its code never asks for:\n" + "\n".join(unused)


def test_no_statement_grants_every_action_or_every_resource():
    for name, statements in identity_policies().items():
        sids = [statement.get("Sid") for statement in statements if statement.get("Sid")]
        assert len(sids) == len(set(sids)), f"{name}: Sids must be unique"
        for statement in statements:
            assert "NotAction" not in statement and "NotResource" not in statement, name
            actions = as_list(statement["Action"])
            assert all("*" not in action for action in actions), f"{name}: wildcard action in {statement}"
            if "*" in as_list(statement["Resource"]):
                assert set(actions) <= STAR_ONLY, f"{name}: Resource '*' for {set(actions) - STAR_ONLY}"


def test_every_kms_grant_is_bound_to_an_encryption_context():
    for name, statements in identity_policies().items():
        for statement in statements:
            if any(action.startswith("kms:") for action in as_list(statement["Action"])):
                condition = statement.get("Condition", {})
                keys = condition.get("ForAllValues:StringEquals", {}).get("kms:EncryptionContextKeys")
                assert keys, f"{name}: {statement.get('Sid')} opens any context"
                # An account's secrets (an accountAlias in the context), or the token signing key
                # (exactly its context, value included).
                of_an_account = condition.get("Null", {}).get("kms:EncryptionContext:accountAlias") == "false"
                signing_key = as_list(keys) == list(TOKEN_SIGNING_CONTEXT) and all(
                    condition.get("StringEquals", {}).get(f"kms:EncryptionContext:{key}") == value
                    for key, value in TOKEN_SIGNING_CONTEXT.items())
                assert of_an_account or signing_key, \
                    f"{name}: {statement.get('Sid')} must require an accountAlias in the context, or be the signing key's"


def kms_context(context: dict[str, str]) -> dict:
    """The request context of a KMS call with this encryption context, on the stack's key."""
    return {"kms:EncryptionContextKeys": sorted(context), "kms:ResourceAliases": key_aliases(only("AWS::KMS::Key")),
            **{f"kms:EncryptionContext:{key}": value for key, value in context.items()}}


def test_only_the_api_and_the_authorizer_can_open_the_token_signing_key_and_only_the_api_make_it():
    key = arn(only("AWS::KMS::Key"))
    context = kms_context(TOKEN_SIGNING_CONTEXT)
    policies = identity_policies()
    opening = {name for name, statements in policies.items() if allows(statements, "kms:Decrypt", key, context)}
    making = {name for name, statements in policies.items() if allows(statements, "kms:GenerateDataKey", key, context)}
    assert opening == {".chalice/policy-api-handler.json", ".chalice/policy-token-authorizer.json"}
    assert making == {".chalice/policy-api-handler.json"}
    # The worker runs hostile playbooks: its Decrypt needs an accountAlias and a jobId in the context.
    assert not allows(policy(WORKER), "kms:Decrypt", key, context)
    assert not allows(policy(WORKER), "kms:Decrypt", key, kms_context({**TOKEN_SIGNING_CONTEXT, "accountAlias": "A",
                                                                       "jobId": "j"}))


def test_the_token_signing_grants_open_nothing_else():
    key = arn(only("AWS::KMS::Key"))
    for name, statements in identity_policies().items():
        grants = [statement for statement in statements
                  if "kms:EncryptionContext:purpose" in statement.get("Condition", {}).get("StringEquals", {})]
        for context in ({"accountAlias": "ACME", "jobId": "a-job"}, {"accountAlias": "ACME"},
                        {**TOKEN_SIGNING_CONTEXT, "accountAlias": "ACME"}, {"purpose": "something-else"}):
            for action in ("kms:Decrypt", "kms:GenerateDataKey"):
                assert not allows(grants, action, key, kms_context(context)), (name, action, context)


def test_the_authorizer_reads_the_signing_key_item_and_no_account():
    accounts = arn("AccountsTable")
    authorizer = policy("token_authorizer")
    assert allows(authorizer, "dynamodb:GetItem", accounts, {"dynamodb:LeadingKeys": [SIGNING_KEY_ITEM]})
    for leading in ({"dynamodb:LeadingKeys": ["ACME"]}, {"dynamodb:LeadingKeys": [SIGNING_KEY_ITEM, "ACME"]}, {}):
        assert not allows(authorizer, "dynamodb:GetItem", accounts, leading), leading
    # The API writes that one item, and no account, whole.
    api = policy("api_handler")
    assert allows(api, "dynamodb:PutItem", accounts, {"dynamodb:LeadingKeys": [SIGNING_KEY_ITEM]})
    assert not allows(api, "dynamodb:PutItem", accounts, {"dynamodb:LeadingKeys": ["ACME"]})
    assert not allows(policy(WORKER), "dynamodb:GetItem", accounts, {"dynamodb:LeadingKeys": [SIGNING_KEY_ITEM]})


def test_the_worker_has_a_role_of_its_own():
    worker = resource(WORKER)["Properties"]
    assert "Policies" not in worker, "SAM would add AWSLambdaSQSQueueExecutionRole (every queue of the account)"
    assert worker.get("Role") == {"Fn::GetAtt": ["WorkerRole", "Arn"]}
    role = role_of(WORKER)
    assert not role["Properties"].get("ManagedPolicyArns")
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    for logical_id, value in translated()["Resources"].items():
        if value["Type"] == "AWS::IAM::Role":
            assert not value["Properties"].get("ManagedPolicyArns"), f"{logical_id} has a managed policy"


def test_every_chalice_function_has_a_policy_of_its_own():
    functions = {chalice_function_name(name, decorators) for name, decorators in app_decorators().items()} - {None}
    assert functions == set(CHALICE_FUNCTIONS), "a new Chalice function: give it a policy file and list it here"
    files = {function: chalice_policy_file(function) for function in functions}
    assert len(set(files.values())) == len(files), "one policy file per function"
    stage = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"]
    assert "iam_policy_file" not in stage, "no stage-wide fallback: a function without its own policy must not deploy"


def test_the_analysis_sees_the_calls_it_should():
    """A guard against an analysis that finds nothing, and so passes everything."""
    def actions(function):
        return {call.action for call in required(function)}

    assert {"states:SendTaskHeartbeat", "states:SendTaskSuccess", "dynamodb:BatchWriteItem", "kms:Decrypt",
            "dynamodb:Query", "sqs:SendMessage"} <= actions(WORKER)
    assert {"dynamodb:GetItem", "kms:Decrypt"} == actions("token_authorizer") - {a for a in actions("token_authorizer")
                                                                                 if a.startswith("logs:")}
    signing = kms_context(TOKEN_SIGNING_CONTEXT)
    assert {(call.action, call.resources[0]) for call in required("token_authorizer") if call.context in (
        signing, {"dynamodb:LeadingKeys": [SIGNING_KEY_ITEM]})} == {
        ("kms:Decrypt", arn(only("AWS::KMS::Key"))), ("dynamodb:GetItem", arn("AccountsTable"))}
    assert {call.action for call in required("api_handler") if call.context == signing} == {
        "kms:GenerateDataKey", "kms:Decrypt"}
    # ... and the token's user (revocation), read only
    assert {call.resources[0] for call in required("token_authorizer") if call.action == "dynamodb:GetItem"} == {
        arn("AccountsTable"), arn("UsersTable")}
    assert {"dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:DeleteItem"}.isdisjoint(
        {call.action for call in required("schedule_trigger") if call.resources[0] == arn("UsersTable")})
    assert {"states:StartExecution", "kms:GenerateDataKey", "dynamodb:ConditionCheckItem", "scheduler:CreateSchedule",
            "iam:PassRole", "cloudformation:DescribeStackResource"} <= actions("api_handler")
    assert {"states:DescribeExecution", "scheduler:GetSchedule"} <= actions("schedule_trigger")
    assert "scheduler:ListSchedules" in actions("schedule_reconciler")
    assert {"dynamodb:UpdateItem", "dynamodb:GetItem", "states:SendTaskSuccess"} <= actions("run_handoff")
    assert "states:DescribeExecution" not in actions("api_handler")
    idempotency = {call.action for call in required("api_handler") if call.resources == [arn("IdempotencyTable")]}
    assert idempotency == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
    galaxy_cache = {(call.action, call.resources[0]) for call in required(WORKER) if call.action.startswith("s3:")}
    assert galaxy_cache == {(action, f"{arn('GalaxyCacheBucket')}/galaxy/an-object")
                            for action in ("s3:GetObject", "s3:PutObject")}
    worker_secrets = {tuple(call.context["kms:EncryptionContextKeys"]) for call in required(WORKER)
                      if call.action == "kms:Decrypt"}
    assert worker_secrets == {("accountAlias", "jobId"), ("accountAlias", "executionId", "jobId")}
    assert {"ecs:RunTask", "iam:PassRole", "states:SendTaskFailure"} <= actions("fargate_launcher")
    run_task = [call for call in required("fargate_launcher") if call.action == "ecs:RunTask"]
    assert [call.context for call in run_task] == [{"ecs:cluster": arn("FargateCluster")}]
    assert {resource_arn for call in required("fargate_launcher") if call.action == "iam:PassRole"
            for resource_arn in call.resources} == {arn("FargateTaskRole"), arn("FargateExecutionRole")}
    assert actions(FARGATE_TASK) == actions(WORKER) - set(EVENT_SOURCE_ACTIONS) - {
        "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}


def test_the_fargate_task_holds_no_more_than_the_lambda_worker():
    """The task runs the same hostile playbooks: its role is the worker's, less the run queue and the logs."""
    task = role_of(FARGATE_TASK)
    assert task["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "ecs-tasks.amazonaws.com"}
    worker = {statement["Sid"]: statement for statement in policy(WORKER)}
    fargate = {statement["Sid"]: statement for statement in policy(FARGATE_TASK)}
    assert set(worker) - set(fargate) == {"RunQueueEventSource", "OwnLogs"}
    assert all(fargate[sid] == worker[sid] for sid in fargate)
    # The message (with the task token) is an override of the container's environment, not a grant.
    assert not allows(policy(FARGATE_TASK), "sqs:ReceiveMessage", arn("RunQueue"), {})
    assert not allows(policy(FARGATE_TASK), "sqs:ReceiveMessage", arn("FargateQueue"), {})


def test_the_fargate_execution_role_pulls_the_worker_image_and_writes_the_task_logs_only():
    role_id = resource(FARGATE_TASK)["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0]
    statements = role_statements(translated()["Resources"][role_id])
    repository = f"arn:{PARTITION}:ecr:{REGION}:{ACCOUNT}:repository/{STACK}-worker"
    group = arn("FargateLogGroup").removesuffix(":*")
    needed = [("ecr:GetAuthorizationToken", "*"), ("ecr:BatchGetImage", repository),
              ("ecr:GetDownloadUrlForLayer", repository),
              ("logs:CreateLogStream", f"{group}:log-stream:worker/worker/0123"),
              ("logs:PutLogEvents", f"{group}:log-stream:worker/worker/0123")]
    for action, resource_arn in needed:
        assert allows(statements, action, resource_arn, {}), (action, resource_arn)
    for action, resource_arn in [("ecr:BatchGetImage", f"arn:{PARTITION}:ecr:{REGION}:{ACCOUNT}:repository/other"),
                                 ("logs:PutLogEvents", f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:other:log-stream:x"),
                                 ("ecr:PutImage", repository)]:
        assert not allows(statements, action, resource_arn, {}), (action, resource_arn)
    granted = {(action, pattern) for statement in statements for action in as_list(statement["Action"])
               for pattern in as_list(statement["Resource"])}
    assert all(any(action == wanted and matches(pattern, where) for wanted, where in needed)
               for action, pattern in granted), granted
