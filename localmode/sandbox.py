"""A Lambda-faithful sandbox for local workers: the host side.

AWS Lambda runs the worker with a read-only root filesystem but for /tmp, a /dev without shm or
pseudo-terminals, a non-root user, a PID namespace of its own, the function's code at /var/task,
and one environment reused across invocations. Each local worker process runs in such a sandbox,
made from the kernel's namespaces with util-linux's `unshare` (no Docker), so that a worker that
cannot run on Lambda cannot run here either. `sandbox_init` sets up the inside.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
DOCKERFILE = REPOSITORY / "runner_lambda" / "Dockerfile"
TASK_ROOT = "/var/task"
RUNTIME_ROOT = "/var/runtime"
# Lambda's user in an image function: sbx_user1051, uid 993, gid 990. The Dockerfile adds it to
# the image's /etc/passwd, so that ssh and git can look it up; the sandbox adds the same line.
SANDBOX_UID, SANDBOX_GID = 993, 990
PASSWD_LINE = "sbx_user1051:x:993:990::/tmp:/sbin/nologin"
DEFAULT_TMP_MB = 512
LAMBDA_ENVIRONMENT = {
    "AWS_LAMBDA_FUNCTION_NAME": "runner-worker",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/runner-worker",
    "AWS_LAMBDA_LOG_STREAM_NAME": "local",
    "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
    "AWS_EXECUTION_ENV": "AWS_Lambda_Image",
    "LAMBDA_TASK_ROOT": TASK_ROOT,
    "LAMBDA_RUNTIME_DIR": RUNTIME_ROOT,
    # Lambda's images set en_US.UTF-8 and ship it; Debian hosts may lack it, C.UTF-8 they all have.
    "LANG": "C.UTF-8",
    "TZ": ":UTC",
}
# A Fargate task's environment has none of Lambda's variables; ECS names the platform.
FARGATE_ENVIRONMENT = {
    "AWS_EXECUTION_ENV": "AWS_ECS_FARGATE",
    "LAMBDA_TASK_ROOT": TASK_ROOT,  # the image's own ENV (Lambda's base image sets them)
    "LAMBDA_RUNTIME_DIR": RUNTIME_ROOT,
    "LANG": "C.UTF-8",
    "TZ": ":UTC",
}
# What the worker keeps of local mode's environment: the emulator's address and credentials,
# and the service's settings. Nothing else of the host reaches the sandbox.
KEPT_PREFIXES = ("RUNNER_", "AWS_")


@dataclass(frozen=True)
class SandboxPlan:
    """Everything the inside needs to build itself, passed to `sandbox_init` as JSON."""

    task_source: str
    runtime_source: str
    tmp_mb: int = DEFAULT_TMP_MB
    uid: int = SANDBOX_UID
    gid: int = SANDBOX_GID
    passwd_line: str = PASSWD_LINE
    # Paths that must stay reachable for the sandbox user (the Python installation).
    reachable: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """The plan as one JSON argument."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "SandboxPlan":
        """The plan `to_json` wrote."""
        return cls(**json.loads(text))


def unavailable_reason(environ: dict | None = None) -> str | None:
    """Why workers run without a sandbox here, or None when they run in one."""
    env = os.environ if environ is None else environ
    if env.get("RUNNER_SANDBOX", "lambda") == "none":
        return "the sandbox is off (RUNNER_SANDBOX=none)"
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux namespaces; this is {sys.platform}"
    if os.geteuid() != 0:
        return "the sandbox needs root to build its namespaces and mounts (workers run unsandboxed)"
    if shutil.which("unshare") is None:
        return "the sandbox needs util-linux's unshare (apt-get install util-linux)"
    return None


def tmp_megabytes(environ: dict | None = None) -> int:
    """The size of the sandbox's /tmp (RUNNER_SANDBOX_TMP_MB, Lambda's 512 by default)."""
    raw = (os.environ if environ is None else environ).get("RUNNER_SANDBOX_TMP_MB") or str(DEFAULT_TMP_MB)
    value = int(raw)
    if not 16 <= value <= 10240:
        raise ValueError(f"RUNNER_SANDBOX_TMP_MB must be between 16 and 10240 (Lambda's range), got {value}")
    return value


def dockerfile_copies(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """The (source, destination under the task root) pairs the Dockerfile COPYs into the task root."""
    copies = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) < 3 or words[0].upper() != "COPY" or any(word.startswith("--") for word in words[1:]):
            continue
        *sources, destination = words[1:]
        if not destination.startswith("${LAMBDA_TASK_ROOT}"):
            continue  # build-time files (requirements), not the function's code
        for source in sources:
            copies.append((source.rstrip("/"), destination.removeprefix("${LAMBDA_TASK_ROOT}").strip("/")))
    return copies


def dockerfile_environment(dockerfile: Path = DOCKERFILE) -> dict[str, str]:
    """The variables the Dockerfile's ENV lines set (KEY=VALUE form)."""
    env: dict[str, str] = {}
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if line.split()[:1] == ["ENV"]:
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def assemble_task_root(destination: Path, repository: Path = REPOSITORY) -> Path:
    """Copy exactly what the Dockerfile puts in the task root into `destination` (fresh)."""
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for source, target in dockerfile_copies():
        origin = repository / source
        place = destination / (target or Path(source).name)
        if origin.is_dir():
            shutil.copytree(origin, place, ignore=ignore)
        else:
            place.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, place)
    _open_for_everyone(destination)
    return destination


def _open_for_everyone(root: Path) -> None:
    """Readable (and traversable) by the sandbox user, whatever the umask was."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def worker_environment(base: dict[str, str], fargate: bool = False) -> dict[str, str]:
    """The worker's environment inside: Lambda's variables (or a Fargate task's), the Dockerfile's,
    and the service's."""
    env = {key: value for key, value in base.items() if key.startswith(KEPT_PREFIXES)}
    env.update(FARGATE_ENVIRONMENT if fargate else LAMBDA_ENVIRONMENT)
    env.update(dockerfile_environment())
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    env["PYTHONPATH"] = f"{TASK_ROOT}:{RUNTIME_ROOT}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["RUNNER_SANDBOXED"] = "1"
    return env


def wrap(argv: list[str], plan: SandboxPlan) -> list[str]:
    """The command that runs `argv` inside a new sandbox (the sandbox ends when it ends)."""
    return ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
            sys.executable, "-m", "localmode.sandbox_init", plan.to_json(), "--", *argv]


def make_plan(state_dir: Path, environ: dict | None = None) -> SandboxPlan:
    """Assemble the task root under the state dir and describe the sandbox to build."""
    task = assemble_task_root(state_dir / "sandbox" / "task")
    runtime = state_dir / "sandbox" / "runtime"
    if runtime.exists():
        shutil.rmtree(runtime)
    runtime.mkdir(parents=True)
    shutil.copytree(REPOSITORY / "localmode", runtime / "localmode",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _open_for_everyone(runtime)
    reachable = sorted({sys.prefix, sys.base_prefix, str(Path(os.path.realpath(sys.executable)).parent.parent),
                        str((state_dir / "examples.git").resolve())})
    return SandboxPlan(task_source=str(task), runtime_source=str(runtime), tmp_mb=tmp_megabytes(environ),
                       reachable=reachable)
