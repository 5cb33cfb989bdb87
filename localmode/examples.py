"""The example playbooks (examples/playbooks/) as a git repository that local mode's jobs can clone.

`publish_examples(state_dir)` keeps `<state_dir>/examples.git`: a bare repository whose branch
`main` holds exactly the files of examples/playbooks, and answers its file:// URL. A commit is made
only when those files differ from the branch's tip, so a restart with nothing changed leaves the
repository as it was (same commit) and an edit shows up as one new commit. A damaged repository is
made again from scratch.

git runs with a fixed author and committer and without the machine's git configuration (system
or global), so it works on a fresh machine where nobody ran `git config`; nothing is written to
examples/ itself (a private index file in the bare repository serves the commit).
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

logger = logging.getLogger("runner.local.examples")

EXAMPLES_SOURCE = Path(__file__).resolve().parents[1] / "examples" / "playbooks"
REPOSITORY_NAME = "examples.git"
BRANCH = "main"
GIT_TIMEOUT_SECONDS = 60
IDENTITY = {"GIT_AUTHOR_NAME": "Runner examples", "GIT_AUTHOR_EMAIL": "examples@runner.invalid",
            "GIT_COMMITTER_NAME": "Runner examples", "GIT_COMMITTER_EMAIL": "examples@runner.invalid"}


class ExamplesError(Exception):
    """The example repository could not be made (git missing or failing, no examples directory)."""


def _environment(git_dir: Path, work_tree: Path | None = None, index: Path | None = None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("GIT_")}
    env.update(IDENTITY)
    env.update({"GIT_DIR": str(git_dir), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    if work_tree is not None:
        env["GIT_WORK_TREE"] = str(work_tree)
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    return env


def _git(env: dict[str, str], *args: str, cwd: Path | None = None, check: bool = True) -> str:
    """git's stdout, stripped ("" when it failed and `check` is off)."""
    argv = ["git", "-c", "commit.gpgsign=false", "-c", "core.autocrlf=false", *args]
    try:
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_SECONDS, cwd=cwd or env.get("GIT_WORK_TREE") or env["GIT_DIR"])
    except subprocess.TimeoutExpired:
        raise ExamplesError(f"git {args[0]} took longer than {GIT_TIMEOUT_SECONDS} s") from None
    if check and done.returncode != 0:
        raise ExamplesError(f"git {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip() if done.returncode == 0 else ""


def _ensure_repository(repository: Path) -> None:
    """A bare repository at `repository` whose HEAD is `main`; one that git cannot read is made again."""
    env = _environment(repository)
    if repository.exists():
        if (repository / "HEAD").is_file() and _git(env, "rev-parse", "--is-bare-repository", check=False) == "true":
            _git(env, "symbolic-ref", "HEAD", f"refs/heads/{BRANCH}")
            return
        logger.warning("%s is not a bare git repository; making it again", repository)
        if repository.is_dir() and not repository.is_symlink():
            shutil.rmtree(repository)
        else:
            repository.unlink()
    repository.mkdir(parents=True)
    _git(env, "init", "-q", "--bare", cwd=repository.parent)
    _git(env, "symbolic-ref", "HEAD", f"refs/heads/{BRANCH}")


def publish_examples(state_dir: Path, source: Path = EXAMPLES_SOURCE) -> str:
    """(Re)make `<state_dir>/examples.git` from `source` on branch `main`; answer its file:// URL.

    Idempotent: nothing is committed when `main` already holds exactly the files of `source`.
    """
    if shutil.which("git") is None:
        raise ExamplesError("git is not installed (Debian: apt-get install git)")
    source = Path(source).resolve()
    if not source.is_dir():
        raise ExamplesError(f"{source} is not a directory")
    repository = (Path(state_dir) / REPOSITORY_NAME).resolve()
    _ensure_repository(repository)
    index = repository / "examples.index"
    index.unlink(missing_ok=True)
    env = _environment(repository, work_tree=source, index=index)
    try:
        _git(env, "add", "--all", ".")
        tree = _git(env, "write-tree")
    finally:
        index.unlink(missing_ok=True)
    ref = f"refs/heads/{BRANCH}"
    parent = _git(env, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False)
    if parent and _git(env, "rev-parse", f"{parent}^{{tree}}") == tree:
        return repository.as_uri()
    message = "Example playbooks of Runner (examples/playbooks)"
    commit = _git(env, "commit-tree", tree, *(["-p", parent] if parent else []), "-m", message)
    # Compare-and-swap: the branch moves only from the tip this commit was made on.
    _git(env, "update-ref", "-m", "publish examples", ref, commit, parent or "0" * 40)
    logger.info("example playbooks published as %s (commit %s)", repository, commit[:12])
    return repository.as_uri()


def example_repository(state_dir: Path) -> str | None:
    """publish_examples for local mode's start: a failure is logged and answers None, never stops it."""
    try:
        return publish_examples(state_dir)
    except (ExamplesError, OSError) as exc:
        logger.warning("the example playbooks are not available as a git repository: %s", exc)
        return None
