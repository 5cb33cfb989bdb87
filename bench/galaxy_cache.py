"""Galaxy requirements: an install with ansible-galaxy against one from the cache (/tmp, and S3).

Runs the worker's installer (runner_lambda/galaxy.py) on a checkout whose roles/requirements.yml
names ROLES roles in git repositories (git+file://, no network), and a collections/requirements.yml
naming one collection in a git repository. Uncached: every install with a cache that misses.
Cached: from the warm /tmp cache, and from S3 alone (a cold worker; moto in-process stands in
for the stack's bucket). Prints the median of each and the ratios.

    .venv/bin/python bench/galaxy_cache.py [--repeat 5] [--roles 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.platform.config import LOCAL_REPOSITORY_RULES  # noqa: E402
from runner_lambda.galaxy import GalaxyInstaller, InstallCache  # noqa: E402
from runner_lambda.isolation import run_environment  # noqa: E402
from runner_lambda.playbook import galaxy_process_environment  # noqa: E402

GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]


def repository(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text, encoding="utf-8")
    subprocess.run([*GIT, "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run([*GIT, "-C", str(path), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(path), "commit", "-q", "-m", "bench"], check=True)
    return path


def checkout(base: Path, roles: int) -> Path:
    lines = []
    for index in range(roles):
        role = repository(base / f"role{index}", {
            "tasks/main.yml": f"- debug:\n    msg: role {index}\n",
            "meta/main.yml": "galaxy_info:\n  author: bench\n  description: bench\n  license: MIT\n"
                             "  min_ansible_version: '2.9'\n  platforms: []\ndependencies: []\n"})
        lines.append(f"- src: git+file://{role}\n  name: role{index}\n  version: main\n")
    collection = repository(base / "collection", {
        "galaxy.yml": "namespace: bench\nname: tools\nversion: 1.0.0\nreadme: README.md\nauthors: [bench]\n",
        "README.md": "bench\n", "plugins/filter/.keep": ""})
    return repository(base / "project", {
        "site.yml": "- hosts: all\n  roles: [role0]\n",
        "roles/requirements.yml": "".join(lines),
        "collections/requirements.yml": f"collections:\n  - name: file://{collection}\n    type: git\n"
                                        "    version: main\n"})


def installer(cache: InstallCache | None, scratch: Path) -> GalaxyInstaller:
    env = run_environment(home=scratch, temp=scratch)
    env.update({"GIT_ALLOW_PROTOCOL": "file", "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"})

    def ls_remote(url: str, refs: list[str]) -> str:
        return subprocess.run(["git", "ls-remote", "--", url, *refs], env=env, capture_output=True,
                              text=True, check=True).stdout

    return GalaxyInstaller(cache, LOCAL_REPOSITORY_RULES, env, ls_remote, lambda text: text,
                           extra_environment=galaxy_process_environment())


def timed_install(cache: InstallCache | None, project: Path, base: Path, expected: str) -> float:
    workspace = Path(tempfile.mkdtemp(dir=base))
    try:
        installed = installer(cache, workspace / "scratch").install(project, workspace / "galaxy")
        assert installed is not None and installed.cache == expected, (installed, expected)
        assert (workspace / "galaxy" / "roles" / "role0" / "tasks" / "main.yml").is_file()
        assert (workspace / "galaxy" / "collections" / "ansible_collections" / "bench" / "tools").is_dir()
        return installed.seconds
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--roles", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    import boto3
    from moto import mock_aws

    base = Path(tempfile.mkdtemp(prefix="galaxy-bench-"))
    try:
        project = checkout(base, args.roles)
        uncached = [timed_install(None, project, base, "none") for _ in range(args.repeat)]
        with mock_aws():
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket="bench-galaxy-cache")
            warm = InstallCache(s3, "bench-galaxy-cache", directory=base / "warm-cache")
            timed_install(warm, project, base, "none")  # fills both caches
            from_tmp = [timed_install(warm, project, base, "tmp") for _ in range(args.repeat)]
            from_s3 = []
            for index in range(args.repeat):
                cold = InstallCache(s3, "bench-galaxy-cache", directory=base / f"cold-cache-{index}")
                from_s3.append(timed_install(cold, project, base, "s3"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    slow, tmp, cold = (statistics.median(values) for values in (uncached, from_tmp, from_s3))
    print(f"galaxy install, {args.roles} git roles + 1 git collection, median of {args.repeat}:")
    print(f"  uncached (ansible-galaxy)   {slow * 1000:8.1f} ms")
    print(f"  cached, warm /tmp           {tmp * 1000:8.1f} ms   ({slow / tmp:.1f}x faster)")
    print(f"  cached, cold worker from S3 {cold * 1000:8.1f} ms   ({slow / cold:.1f}x faster; moto in-process)")
    print("  (cached installs include resolving each git source with git ls-remote)")


if __name__ == "__main__":
    main()
