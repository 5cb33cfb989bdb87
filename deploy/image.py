"""Step 1: build the worker image from runner_lambda/Dockerfile and push it to ECR.

Lambda runs a container-image function only from an ECR repository of its own account and
region, so each stack gets one, `<stack>-worker`, created on its first deploy. The image is tagged
with its own id (a digest of its content): an unchanged worker keeps its tag, so CloudFormation
sees no change and the function is left alone, while a changed one always gets a new tag (with a
fixed tag such as `latest` CloudFormation would see no change and the function would keep
running the old image).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from deploy import DeployError

DOCKERFILE = "runner_lambda/Dockerfile"
# Lambda runs the worker on x86_64 (the template names no other architecture); saying so makes
# an image built on an ARM machine run there too.
PLATFORM = "linux/amd64"
# BuildKit attaches provenance attestations by default, which turns the pushed image into an OCI
# index that Lambda refuses ("the image manifest ... media type ... is not supported"). buildx
# honours this variable; the classic builder, which attaches none, ignores it.
BUILD_ENVIRONMENT = {"BUILDX_NO_DEFAULT_ATTESTATIONS": "1"}
# Images a repository keeps: enough to roll back a few deploys, few enough that storage stays cheap.
KEPT_IMAGES = 10
NO_DOCKER_HINT = "or deploy an image already in ECR with PARAMETERS=WorkerImageUri=<image URI>"


def repository_name(stack_name: str) -> str:
    """`<stack>-worker`, within ECR's rules (lowercase, no doubled separators)."""
    return re.sub(r"-{2,}", "-", f"{stack_name.lower()}-worker")


def require_docker() -> str:
    """The docker command, once its engine answers; otherwise one line saying what is missing."""
    docker = shutil.which("docker")
    if docker is None:
        raise DeployError("building the worker image needs Docker and there is no `docker` command: "
                          f"install Docker and start it, {NO_DOCKER_HINT}")
    try:
        answer = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"],
                                capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise DeployError(f"`docker info` did not answer within 60 s: start the Docker engine, {NO_DOCKER_HINT}") from None
    if answer.returncode != 0:
        lines = [line.strip() for line in (answer.stderr or answer.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit {answer.returncode}"
        raise DeployError(f"building the worker image needs a running Docker engine and `docker info` "
                          f"failed ({reason}): start Docker, {NO_DOCKER_HINT}")
    return docker


def ensure_repository(ecr: Any, name: str) -> str:
    """The repository's URI, creating the repository (scanned on push, last images kept) if missing."""
    try:
        return ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryUri"]
    except ecr.exceptions.RepositoryNotFoundException:
        pass
    try:
        uri = ecr.create_repository(repositoryName=name,
                                    imageScanningConfiguration={"scanOnPush": True})["repository"]["repositoryUri"]
    except ecr.exceptions.RepositoryAlreadyExistsException:  # another deploy of the same stack won the race
        return ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryUri"]
    policy = {"rules": [{"rulePriority": 1, "description": f"keep the last {KEPT_IMAGES} images",
                         "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                                       "countNumber": KEPT_IMAGES},
                         "action": {"type": "expire"}}]}
    ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=json.dumps(policy))
    return uri


def _run(command: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    result = subprocess.run(command, **kwargs)
    if result.returncode != 0:
        raise DeployError(f"{what} failed (exit {result.returncode}); its output is above")
    return result


def build(docker: str, root: Path) -> str:
    """Build the worker image (its output goes to the terminal); answers the image id."""
    with tempfile.TemporaryDirectory() as scratch:
        id_file = Path(scratch) / "image-id"
        _run([docker, "build", "--platform", PLATFORM, "-f", DOCKERFILE, "--iidfile", str(id_file), "."],
             "`docker build`", cwd=root, env={**os.environ, **BUILD_ENVIRONMENT})
        return id_file.read_text(encoding="utf-8").strip()


def _tag_present(ecr: Any, repository: str, tag: str) -> bool:
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    except ecr.exceptions.ImageNotFoundException:
        return False
    return True


def push(docker: str, ecr: Any, image_id: str, repository: str, repository_uri: str) -> str:
    """Push the image under its content tag (unless ECR has it already); answers its URI."""
    tag = image_id.split(":")[-1][:32]
    image_uri = f"{repository_uri}:{tag}"
    if _tag_present(ecr, repository, tag):
        print(f"worker image {image_uri} is already in ECR")
        return image_uri
    auth = ecr.get_authorization_token()["authorizationData"][0]
    username, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
    # The password goes through stdin, never argv, where other users could read it.
    _run([docker, "login", "--username", username, "--password-stdin", auth["proxyEndpoint"]],
         "`docker login` to ECR", input=password, text=True, stdout=subprocess.DEVNULL)
    _run([docker, "tag", image_id, image_uri], "`docker tag`")
    _run([docker, "push", image_uri], "`docker push`")
    return image_uri


def publish(docker: str, ecr: Any, stack_name: str, root: Path) -> str:
    """Build the worker image and put it in the stack's repository; answers the URI to deploy."""
    repository = repository_name(stack_name)
    repository_uri = ensure_repository(ecr, repository)
    print(f"building the worker image ({DOCKERFILE}, {PLATFORM})")
    image_id = build(docker, root)
    image_uri = push(docker, ecr, image_id, repository, repository_uri)
    print(f"worker image: {image_uri}")
    return image_uri
