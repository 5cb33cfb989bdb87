"""Cloning a job's repository with the git CLI, credentials never in a URL, argv, log or error."""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from runner_lambda.isolation import run_environment
from runner_lambda.masking import Masker

GIT_TIMEOUT_SECONDS = 300
# git's default date format, as the reference's repository_log shows it.
LOG_FORMAT = "%H%x00%an%x00%ae%x00%ad%x00%B"
# The transports git may use, for the repository and its submodules alike, on AWS.
DEFAULT_PROTOCOLS = ("https", "ssh")
# Given to every git command: a server may not send git (and a password) elsewhere.
GIT_OPTIONS = ("-c", "http.followRedirects=false")
COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
# git asks the askpass program for the username, then for the password, naming where they go
# ("Username for 'https://host': ", "Password for 'https://user@host': "). It answers only the
# prompts naming the repository's own host, and nothing (failing) for any other.
ASKPASS = """#!/bin/sh
case "$1" in
  "Username for '$RUNNER_GIT_ORIGIN': ") printf '%s' "$RUNNER_GIT_USERNAME" ;;
  "Password for '$RUNNER_GIT_USER_ORIGIN': ") printf '%s' "$RUNNER_GIT_PASSWORD" ;;
  *) exit 1 ;;
esac
"""


class CheckoutError(Exception):
    """The repository could not be cloned or the commit checked out (an INIT_FAILURE)."""


@dataclass(frozen=True)
class Credentials:
    """What git may authenticate with: HTTPS basic credentials and/or an SSH key."""

    username: str | None = None
    password: str | None = None
    ssh_key: str | None = None


class Checkout:
    """One clone of a repository into `directory`, run with a private environment."""

    def __init__(self, url: str, directory: Path, scratch: Path, credentials: Credentials,
                 mask: Callable[[str], str] | None = None,
                 protocols: tuple[str, ...] = DEFAULT_PROTOCOLS) -> None:
        self.url = url
        self.directory = directory
        self._scratch = scratch
        self._credentials = credentials
        # The run's masker (every secret it knows), or one of the credentials given here.
        self._mask = mask if mask is not None else Masker(
            [value for value in (credentials.password, credentials.ssh_key) if value])
        self._protocols = protocols
        self._env = self._environment()

    def _environment(self) -> dict[str, str]:
        # Built from nothing: git and its ssh never see the worker's own environment.
        self._scratch.mkdir(parents=True, exist_ok=True)
        env = run_environment(home=self._scratch, temp=self._scratch)
        env.update({
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "LC_ALL": "C",
            # Only these transports, for the repository and any submodule: never ext::, fd::, ...
            "GIT_ALLOW_PROTOCOL": ":".join(self._protocols),
        })
        if "file" in self._protocols:
            # Local mode only: a file:// repository (the job's, or a Galaxy requirement's) belongs
            # to the host's user, not the worker's (the sandbox runs it as Lambda's user); git
            # refuses such a repository by default. safe.directory counts only in protected
            # (global or system) configuration.
            trusting = self._scratch / "gitconfig"
            trusting.write_text("[safe]\n\tdirectory = *\n", encoding="utf-8")
            env["GIT_CONFIG_GLOBAL"] = str(trusting)
        parts = urlsplit(self.url)
        if self._credentials.password is not None and parts.scheme in ("https", "http") and parts.netloc:
            # git asks the askpass program for the username and the password; the program reads
            # them from this process's environment, so they never appear in a URL or argv, and
            # gives them only for the repository's own scheme, host and port.
            askpass = self._scratch / "askpass.sh"
            askpass.write_text(ASKPASS, encoding="utf-8")
            askpass.chmod(0o700)
            username = self._credentials.username or ""
            host = parts.netloc.rsplit("@", 1)[-1]
            env.update({"GIT_ASKPASS": str(askpass), "RUNNER_GIT_USERNAME": username,
                        "RUNNER_GIT_PASSWORD": self._credentials.password,
                        "RUNNER_GIT_ORIGIN": f"{parts.scheme}://{host}",
                        "RUNNER_GIT_USER_ORIGIN": f"{parts.scheme}://{username}@{host}"})
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
               "-o", f"UserKnownHostsFile={self._scratch / 'known_hosts'}"]
        if self._credentials.ssh_key:
            key_file = self._scratch / "repository_key"
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self._credentials.ssh_key)
            ssh += ["-i", str(key_file), "-o", "IdentitiesOnly=yes"]
        env["GIT_SSH_COMMAND"] = " ".join(ssh)
        return env

    @property
    def environment(self) -> dict[str, str]:
        """A copy of git's environment: the same transports, credentials for the same host only."""
        return dict(self._env)

    def ls_remote(self, url: str, refs: list[str]) -> str:
        """`git ls-remote` of another repository (a Galaxy requirement's), with this checkout's rules."""
        return self.git("ls-remote", "--", url, *refs, cwd=self._scratch)

    def git(self, *args: str, cwd: Path | None = None, check: bool = True) -> str:
        """Run git; CheckoutError with git's own (masked) words when it fails."""
        try:
            done = subprocess.run(["git", *GIT_OPTIONS, *args], cwd=cwd or self.directory, env=self._env,
                                  capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise CheckoutError(f"git {args[0]} took longer than {GIT_TIMEOUT_SECONDS} s") from None
        if check and done.returncode != 0:
            # Masked whole first: a multi-line secret is still whole here, not yet cut into lines.
            output = self._mask((done.stderr or done.stdout).strip())
            lines = [line for line in output.splitlines()
                     if line.startswith(("fatal", "error", "remote", "ERROR"))] or output.splitlines()[-2:]
            detail = self._mask("; ".join(lines))[-500:] or f"exit code {done.returncode}"
            raise CheckoutError(f"git {args[0]} failed: {detail}")
        return done.stdout

    def fetch(self, ref: str, commit: str | None = None) -> str:
        """Check out `commit` (a restart's pinned one) or the tip of `ref`; answer HEAD's sha."""
        # The API refuses these; a stored job from before it did must not reach git's options either.
        if not ref or ref.startswith("-"):
            raise CheckoutError(f"{ref!r} is not a branch or tag name")
        if commit and not COMMIT.match(commit):
            raise CheckoutError(f"{commit!r} is not a commit id")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q")
        # "--" everywhere: what follows is a name, a URL, a ref, never an option.
        self.git("remote", "add", "--", "origin", self.url)
        if commit:
            # Servers that allow it hand over one commit; others need the branch's history.
            self.git("fetch", "-q", "--depth", "1", "--", "origin", commit, check=False)
            if not self.git("rev-parse", "--verify", "-q", f"{commit}^{{commit}}", check=False).strip():
                self.git("fetch", "-q", "--", "origin", ref)
            try:
                self.git("checkout", "-q", "--detach", commit)
            except CheckoutError:
                raise CheckoutError(f"commit {commit} of the first attempt is no longer in the repository") from None
        else:
            try:
                self.git("fetch", "-q", "--depth", "1", "--", "origin", ref)
            except CheckoutError as exc:
                raise CheckoutError(f"{exc} (branch or tag {ref!r} of {self.url})") from None
            self.git("checkout", "-q", "--detach", "FETCH_HEAD")
        return self.git("rev-parse", "HEAD").strip()

    def repository_log(self) -> dict:
        """HEAD's commit and the tags pointing at it, in the reference's repository_log shape."""
        sha, author, email, date, message = self.git("log", "-1", f"--format={LOG_FORMAT}").split("\x00", 4)
        return {
            "recent_commit": [{"commit": sha, "author": author, "author_email": email, "date": date,
                               "message": message.strip()}],
            "tags": self._tags_at(sha),
        }

    def _tags_at(self, sha: str) -> list[str]:
        listing = self.git("ls-remote", "--tags", "--", "origin", check=False)
        tags: set[str] = set()
        for line in listing.splitlines():
            target, _, ref = line.partition("\t")
            if target == sha and ref.startswith("refs/tags/"):
                tags.add(ref.removeprefix("refs/tags/").removesuffix("^{}"))
        return sorted(tags)
