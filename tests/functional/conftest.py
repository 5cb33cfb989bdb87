"""Functional fixtures: moto in-process, resources from the template, the app behind a gateway."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chalice.config import Config
from chalice.local import LocalGateway
from moto import mock_aws

from chalicelib.platform import aws
from chalicelib.platform import models
from chalicelib.platform import wiring as services
from chalicelib.auth import users
from chalicelib.platform.config import get_settings, reset_settings
from localmode.atomic_items import make_items_atomic
from localmode.emulator import emulator_environment, provision
from localmode.gateway import dispatch
from chalicelib.platform.template import load_template
from chalicelib.auth.tokens import issue_token


@dataclass
class Answer:
    """An HTTP answer as a client sees it."""

    status: int
    headers: dict
    raw: bytes | None

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None


class ApiClient:
    """Calls the app the way API Gateway (and local mode) would, with our error mapping."""

    def __init__(self, gateway: LocalGateway, token: str | None = None) -> None:
        self.gateway = gateway
        self.token = token

    def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                raw: bytes | None = None, headers: dict | None = None) -> Answer:
        sent = {"content-type": "application/json", **(headers or {})}
        bearer = token if token is not None else self.token
        if bearer:
            sent["authorization"] = f"Bearer {bearer}"
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        status, out_headers, out_body = dispatch(self.gateway, method, path, sent, payload)
        return Answer(status, out_headers, out_body)

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.request("PUT", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Answer:
        return self.request("DELETE", path, **kw)


@dataclass(frozen=True)
class Stack:
    """What the tests need of the stack: its KMS key, and the token signing key it holds."""

    kms_key_id: str
    signing_key: str


@pytest.fixture
def aws_stack(monkeypatch: pytest.MonkeyPatch):
    """moto with the template's tables and key; settings pointed at them; the token signing key
    created, as local mode's start (or a deploy) creates it."""
    template = load_template()
    for name, value in emulator_environment("https://sqs.us-east-1.amazonaws.com", "us-east-1", "fn-", template).items():
        if name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    reset_settings()
    aws.reset_clients()
    models.unbind()
    services.reset()
    make_items_atomic()  # as local mode's emulator does: DynamoDB never loses a concurrent write
    with mock_aws():
        state = provision(aws.client, "us-east-1", template, get_settings(), None, prefix="fn-")
        monkeypatch.setenv("RUNNER_KMS_KEY_ID", state.kms_key_id)
        reset_settings()
        models.bind()
        yield Stack(state.kms_key_id, services.signing_key().get())
    reset_settings()
    aws.reset_clients()
    models.unbind()
    services.reset()


def make_account(alias: str, password: str = "correct-horse-battery") -> tuple[str, str]:
    """An account with one user (its ACCOUNT_ADMIN); answers (username, password)."""
    users.ensure_account(alias)
    username = f"{alias.lower()}-user"
    users.create_user(username, password, alias)
    return username, password


def token_for(signing_key: str, username: str, ttl: int = 3600, now: float | None = None) -> str:
    """A bearer token of a stored user, as its login would issue it now (its role and token version)."""
    from chalicelib.platform.models import User

    return issue_token(signing_key, users.principal_of(User.get(username, consistent_read=True)), ttl, now=now)


@pytest.fixture
def gateway(aws_stack) -> LocalGateway:
    from app import app

    return LocalGateway(app, Config())


@pytest.fixture
def client(gateway, aws_stack) -> ApiClient:
    """A client logged in to account DEMO; `client.other` is logged in to OTHER."""
    make_account("DEMO")
    make_account("OTHER")
    demo = ApiClient(gateway, token_for(aws_stack.signing_key, "demo-user"))
    demo.other = ApiClient(gateway, token_for(aws_stack.signing_key, "other-user"))
    demo.anonymous = ApiClient(gateway)
    return demo


ONE_TASK_PLAYBOOK = "- hosts: all\n  gather_facts: false\n  tasks:\n    - debug: msg=hello\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose branch main holds site.yml, a one-task playbook (a test may define its own)."""
    path = tmp_path / "repo"
    path.mkdir()
    (path / "site.yml").write_text(ONE_TASK_PLAYBOOK)
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "a playbook"]):
        subprocess.run(["git", "-c", "user.name=Ada", "-c", "user.email=ada@example.com", *command],
                       cwd=path, check=True, capture_output=True)
    return path
