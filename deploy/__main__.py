"""python -m deploy --stack NAME: what `make deploy STACK=NAME` runs (docs/deploy.md).

Steps, in order: the worker image to ECR; `make package`; the artefacts to S3 and
dist/packaged.yaml; the stack, through a change set; the first account and its administrator;
the API's URL and where the credentials are. Anything that stops it is one line on stderr and a
non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

from chalicelib.auth import users
from chalicelib.platform.deployed_stack import read_stack, use_stack
from chalicelib.platform.errors import RunnerError
from chalicelib.platform.template import load_template
from deploy import DeployError, artifacts, bootstrap, image, stack

ROOT = Path(__file__).resolve().parents[1]
NO_REGION = "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a region in your AWS profile)"


def parse_parameters(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE pairs (PARAMETERS of the Makefile) as a mapping."""
    given: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise DeployError(f"a parameter is KEY=VALUE, not {pair!r}")
        given[key] = value
    return given


def package(root: Path) -> None:
    """Run `make package`, which writes dist/template.yaml and dist/deployment.zip."""
    try:
        result = subprocess.run(["make", "--no-print-directory", "package"], cwd=root)
    except FileNotFoundError:
        raise DeployError("`make` is not installed: it runs `make package`") from None
    if result.returncode != 0:
        raise DeployError(f"`make package` failed (exit {result.returncode}); its output is above")


def upload(session: boto3.session.Session, region: str, account_id: str, args: argparse.Namespace,
           given: dict[str, str]) -> tuple[dict, dict]:
    """Step 2: package, upload the artefacts, write dist/packaged.yaml; answers (template, source)."""
    dist = Path(args.dist)
    if not args.no_package:
        package(ROOT)
    template_path = dist / "template.yaml"
    if not template_path.is_file():
        raise DeployError(f"{template_path} is missing: `make package` writes it")
    template = load_template(template_path)
    stack.check_parameter_names(template, given)
    s3 = session.client("s3", region_name=region)
    bucket = args.artifact_bucket or artifacts.bucket_name(args.stack, account_id, region)
    artifacts.ensure_bucket(s3, bucket, account_id, region)
    store = artifacts.ArtifactStore(s3, bucket, account_id)
    packaged = artifacts.package_template(template, dist, store)
    text = artifacts.dump_template(packaged)
    (dist / "packaged.yaml").write_text(text, encoding="utf-8")
    print(f"artefacts in s3://{bucket}; template {dist / 'packaged.yaml'}")
    return packaged, artifacts.template_source(text, store)


def run(args: argparse.Namespace) -> int:
    """Every step, in order."""
    given = parse_parameters(args.parameter or [])
    if not users.ACCOUNT_ALIAS.match(args.account):
        raise DeployError(f"ACCOUNT {args.account!r} is not an account alias: 1-32 letters, digits, '-' or '_'")
    # Docker is checked before anything else, so a machine without it learns so at once.
    docker = None if "WorkerImageUri" in given else image.require_docker()
    session = boto3.session.Session()
    # boto3 reads AWS_DEFAULT_REGION and the profile, not AWS_REGION, which the settings read first.
    region = os.environ.get("AWS_REGION") or session.region_name
    if not region:
        raise DeployError(NO_REGION)
    account_id = session.client("sts", region_name=region).get_caller_identity()["Account"]
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    print(f"deploying stack {args.stack} to account {account_id}, region {region}"
          + (f", endpoint {endpoint}" if endpoint else ""))

    if docker is not None:
        given["WorkerImageUri"] = image.publish(docker, session.client("ecr", region_name=region), args.stack, ROOT)
    packaged, source = upload(session, region, account_id, args, given)
    cloudformation = session.client("cloudformation", region_name=region)
    outcome = stack.deploy_stack(cloudformation, args.stack, source, packaged, given)
    print(f"stack {args.stack} {outcome}")

    deployed = read_stack(cloudformation, args.stack)
    use_stack(deployed)
    first = bootstrap.ensure_first_admin(args.stack, region, deployed.api_url, Path(args.state_dir), args.account)
    print(first.message)
    print(f"API: {deployed.api_url or 'the stack has no ApiUrl output'}")
    if first.credentials is not None:
        print(f"credentials of {first.username}: {first.credentials} (POST /authentication/login with them for a token)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, deploy, and turn whatever stops the deploy into one line."""
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True, help="the CloudFormation stack to create or update")
    parser.add_argument("--account", default=bootstrap.DEFAULT_ACCOUNT,
                        help=f"alias of the first account, made at the first deploy (default {bootstrap.DEFAULT_ACCOUNT})")
    parser.add_argument("--parameter", action="append", metavar="KEY=VALUE",
                        help="a template parameter (repeatable); WorkerImageUri skips building the image")
    parser.add_argument("--state-dir", default=os.environ.get("RUNNER_STATE_DIR", ".runner"),
                        help="where <stack>.json, the credentials, is written (default .runner)")
    parser.add_argument("--dist", default=str(ROOT / "dist"), help="what `make package` wrote (default dist/)")
    parser.add_argument("--no-package", action="store_true", help="deploy dist/ as it is, without `make package`")
    parser.add_argument("--artifact-bucket", help="the S3 bucket for the artefacts (default <stack>-artifacts-<account>-<region>)")
    args = parser.parse_args(argv)
    # Lines in order with docker's and make's own output, even when stdout is not a terminal.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        return run(args)
    except DeployError as error:
        message = str(error)
    except NoCredentialsError:
        message = "no AWS credentials: configure a profile (aws configure), AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    except NoRegionError:
        message = NO_REGION
    except EndpointConnectionError as error:
        message = f"cannot reach {error.kwargs.get('endpoint_url')}: is the endpoint up (AWS_ENDPOINT_URL)?"
    except (BotoCoreError, ClientError) as error:
        message = str(error)
    except RunnerError as error:
        message = error.message
    except KeyboardInterrupt:
        message = "interrupted"
    print(f"deploy: {' '.join(message.split())}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
