"""Administration against whichever AWS endpoint the environment names.

    python -m chalicelib.admin create-account ACME
    python -m chalicelib.admin create-user --account ACME --username ops@acme [--role OPERATOR] [--password-stdin]
    python -m chalicelib.admin set-concurrency --account ACME --limit 8

Without --password-stdin a password is generated and printed once. For local mode, point the
environment at the emulator first: `eval "$(python -m chalicelib.admin local-env)"`. For a
deployed stack, name it before the command: `python -m chalicelib.admin --stack NAME create-account
ACME` finds the stack's tables and KMS key through CloudFormation (in the region
and at the endpoint the AWS environment names), so nothing needs exporting by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.auth import roles, users
from chalicelib.platform.config import get_settings
from chalicelib.platform.deployed_stack import read_stack, use_stack
from chalicelib.platform.errors import RunnerError


def _create_account(args: argparse.Namespace) -> int:
    created = users.ensure_account(args.alias)
    print(f"account {args.alias} {'created' if created else 'already exists'}")
    return 0


def _create_user(args: argparse.Namespace) -> int:
    if args.create_account:
        users.ensure_account(args.account)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else secrets.token_urlsafe(18)
    user = users.create_user(args.username, password, args.account, args.role, replace=args.reset)
    print(f"user {args.username} of account {args.account} ({roles.role_of(user.roles)}) "
          f"{'reset' if args.reset else 'created'}")
    if not args.password_stdin:
        print(f"password: {password}")
    return 0


def _set_concurrency(args: argparse.Namespace) -> int:
    users.set_concurrency(args.account, args.limit)
    print(f"account {args.account}: at most {args.limit} executions run at once")
    return 0


def _local_env(args: argparse.Namespace) -> int:
    path = Path(args.state_dir) / "emulator.json"
    try:
        env = json.loads(path.read_text(encoding="utf-8"))["environment"]
    except (OSError, ValueError, KeyError):
        print(f"no running local mode found ({path} is missing): start it with `make run`", file=sys.stderr)
        return 1
    for name, value in sorted(env.items()):
        print(f"export {name}={value}")
    return 0


def _point_at_stack(stack_name: str) -> None:
    # The settings' region (AWS_REGION, AWS_DEFAULT_REGION) or else the profile's, which boto3
    # finds in ~/.aws/config; the stack's environment then carries it to every later client.
    session = boto3.session.Session()
    region = os.environ.get("AWS_REGION") or session.region_name or get_settings().region
    cloudformation = session.client("cloudformation", region_name=region)
    use_stack(read_stack(cloudformation, stack_name))


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(prog="python -m chalicelib.admin", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", help="a deployed stack: use its tables and KMS key")
    commands = parser.add_subparsers(dest="command", required=True)
    account = commands.add_parser("create-account", help="create an account alias")
    account.add_argument("alias")
    account.set_defaults(run=_create_account)
    user = commands.add_parser("create-user", help="create a user of an account")
    user.add_argument("--account", required=True)
    user.add_argument("--username", required=True)
    user.add_argument("--role", choices=roles.ROLES,
                      help="the user's role; default ACCOUNT_ADMIN (with --reset: unchanged)")
    user.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    user.add_argument("--create-account", action="store_true", help="create the account if missing")
    user.add_argument("--reset", action="store_true",
                      help="set the password (and --role) of an existing user of the account; its tokens stop working")
    user.set_defaults(run=_create_user)
    concurrency = commands.add_parser("set-concurrency", help="how many executions of an account run at once")
    concurrency.add_argument("--account", required=True)
    concurrency.add_argument("--limit", type=int, required=True)
    concurrency.set_defaults(run=_set_concurrency)
    local_env = commands.add_parser("local-env", help="print the environment of the running local mode")
    local_env.add_argument("--state-dir", default=os.environ.get("RUNNER_STATE_DIR", ".runner"))
    local_env.set_defaults(run=_local_env)
    args = parser.parse_args(argv)
    try:
        if args.stack:
            _point_at_stack(args.stack)
        return args.run(args)
    except RunnerError as error:
        where = f" ({error.field})" if error.field else ""
        print(f"error{where}: {error.message}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
