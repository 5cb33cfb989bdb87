"""The worker's git, for real: passwords only for the repository's own host, no redirects, only
the allowed transports (for submodules too), nothing a command line would read as an option.

Real git against tiny HTTP servers on loopback (127.0.0.1 and 127.0.0.2 are two hosts to git).
"""
from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chalicelib.platform.config import LOCAL_REPOSITORY_RULES, RepositoryRules
from runner_lambda.checkout import Checkout, CheckoutError, Credentials
from tests.e2e.realparts import GitHttpServer, git, make_repo

LOCAL = LOCAL_REPOSITORY_RULES.schemes
ON_AWS = RepositoryRules().schemes
USER, PASSWORD = "deployer", "s3cret-of-the-repository"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


class Recorder:
    """An HTTP server on `address` that records (path, Authorization) of every request and answers
    301 to `redirect_to` + path, or else 401 asking for Basic credentials (404 once it has some)."""

    def __init__(self, address: str, redirect_to: str | None = None) -> None:
        self.seen: list[tuple[str, str | None]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                recorder.seen.append((self.path, self.headers.get("Authorization")))
                if redirect_to:
                    self.send_response(301)
                    self.send_header("Location", redirect_to + self.path)
                elif self.headers.get("Authorization"):
                    self.send_response(404)
                else:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.url = f"http://{address}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def redirecting():
    """(A, B): A on 127.0.0.1 redirects every request to B on 127.0.0.2, which asks for a password."""
    other = Recorder("127.0.0.2")
    first = Recorder("127.0.0.1", redirect_to=other.url)
    yield first, other
    first.close()
    other.close()


def checkout(tmp_path: Path, url: str, protocols=LOCAL, name: str = "c", **credentials) -> Checkout:
    return Checkout(url, tmp_path / name / "project", tmp_path / name / "scratch", Credentials(**credentials),
                    protocols=protocols)


def askpass(made: Checkout, prompt: str) -> subprocess.CompletedProcess:
    """Run the checkout's askpass helper as git would, with this prompt."""
    return subprocess.run([made._env["GIT_ASKPASS"], prompt], env=made._env, capture_output=True, text=True)


def test_askpass_answers_the_repository_own_host_only(tmp_path):
    made = checkout(tmp_path, "https://git.example.com:8443/org/repo.git", username=USER, password=PASSWORD)
    assert askpass(made, "Username for 'https://git.example.com:8443': ").stdout == USER
    assert askpass(made, f"Password for 'https://{USER}@git.example.com:8443': ").stdout == PASSWORD
    for prompt in [f"Password for 'https://{USER}@evil.example.com': ",             # another host
                   f"Password for 'https://{USER}@git.example.com': ",              # another port
                   f"Password for 'http://{USER}@git.example.com:8443': ",          # another scheme
                   f"Password for 'https://{USER}@git.example.com:8443.evil.com': ",
                   f"Password for 'https://{USER}@evil.com/git.example.com:8443': ",
                   "Username for 'https://evil.example.com': ", "Password: ", ""]:
        answer = askpass(made, prompt)
        assert (answer.returncode != 0, answer.stdout) == (True, ""), prompt


def test_askpass_compares_literally_not_as_a_pattern(tmp_path):
    made = checkout(tmp_path, "https://git.example.com/r.git", username="d*", password=PASSWORD)
    assert askpass(made, "Password for 'https://d*@git.example.com': ").stdout == PASSWORD
    assert askpass(made, "Password for 'https://dx@evil.com/@git.example.com': ").stdout == ""


def test_a_redirect_to_another_host_gets_no_password_and_the_clone_fails(tmp_path, redirecting):
    first, other = redirecting
    url = f"{first.url}/org/repo.git"
    # Without the worker's settings, git follows the redirect and hands the password to the other
    # host: the danger is real here.
    permissive = tmp_path / "permissive-askpass.sh"
    permissive.write_text(f'#!/bin/sh\ncase "$1" in Username*) echo {USER} ;; *) echo {PASSWORD} ;; esac\n')
    permissive.chmod(0o700)
    plain = subprocess.run(["git", "ls-remote", url], capture_output=True, text=True, timeout=60, env={
        "PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": str(permissive)})
    assert plain.returncode != 0 and ("/org/repo.git/info/refs?service=git-upload-pack", BASIC) in other.seen
    first.seen.clear()
    other.seen.clear()
    # The worker's clone does not follow it: it fails, and neither host saw the password.
    made = checkout(tmp_path, url, username=USER, password=PASSWORD)
    with pytest.raises(CheckoutError) as failed:
        made.fetch("main")
    assert PASSWORD not in str(failed.value)
    assert first.seen and all(auth is None for _, auth in first.seen)
    assert other.seen == []
    # And were redirects followed, its askpass would still not answer for the other host.
    followed = subprocess.run(["git", "-c", "http.followRedirects=true", "ls-remote", "--", url],
                              env=made._env, capture_output=True, text=True, timeout=60)
    assert followed.returncode != 0 and other.seen and all(auth is None for _, auth in other.seen)


def test_a_password_still_reaches_the_repository_own_host(tmp_path):
    source = tmp_path / "source"
    sha = make_repo(source, {"site.yml": "- hosts: all\n"}, branch="main")
    with GitHttpServer(tmp_path / "served", USER, PASSWORD) as server:
        url = server.publish(source, "repo")
        assert checkout(tmp_path, url, name="right", username=USER, password=PASSWORD).fetch("main") == sha
        assert any(request.auth_ok for request in server.requests)
        with pytest.raises(CheckoutError):
            checkout(tmp_path, url, name="wrong", username=USER, password="wrong").fetch("main")


@pytest.mark.parametrize("url, transport", [("fd::17", "fd"), ("ext::sh -c touch% {marker}", "ext"),
                                            ("http://127.0.0.1:1/r.git", "http"), ("file://{source}", "file")])
def test_only_the_allowed_transports_are_used(tmp_path, url, transport):
    marker = tmp_path / "marker"
    source = tmp_path / "source"
    make_repo(source, {"site.yml": "- hosts: all\n"}, branch="main")
    protocols = LOCAL if transport in ("fd", "ext") else ON_AWS
    made = checkout(tmp_path, url.format(marker=marker, source=source), protocols=protocols)
    with pytest.raises(CheckoutError, match=f"transport '{transport}' not allowed"):
        made.fetch("main")
    assert not marker.exists()


def test_submodules_get_the_same_transports_only(tmp_path):
    # GIVEN a repository whose submodules name an http:// and an ext:: URL
    listener = Recorder("127.0.0.1")
    marker = tmp_path / "marker"
    source = tmp_path / "source"
    first = make_repo(source, {"site.yml": "- hosts: all\n"}, branch="main")
    (source / ".gitmodules").write_text(f'[submodule "web"]\n\tpath = web\n\turl = {listener.url}/sub.git\n'
                                        f'[submodule "run"]\n\tpath = run\n\turl = ext::sh -c touch% {marker}\n')
    git(source, "add", ".gitmodules")
    for path in ("web", "run"):  # gitlinks, to any commit: the submodules are never fetched
        git(source, "update-index", "--add", "--cacheinfo", f"160000,{first},{path}")
    git(source, "commit", "-q", "-m", "submodules")
    try:
        # WHEN the worker's git, allowed file:// only, updates them
        made = checkout(tmp_path, f"file://{source}", protocols=("file",))
        made.fetch("main")
        for path, transport in (("web", "http"), ("run", "ext")):
            with pytest.raises(CheckoutError, match=f"transport '{transport}' not allowed"):
                made.git("submodule", "update", "--init", "--", path)
        # THEN nothing was fetched over http nor run through ext
        assert listener.seen == [] and not marker.exists()
        # while git's own defaults would have fetched the http one
        env = {name: value for name, value in made._env.items() if name != "GIT_ALLOW_PROTOCOL"}
        subprocess.run(["git", "submodule", "update", "--init", "--", "web"], cwd=made.directory, env=env,
                       capture_output=True, timeout=60)
        assert listener.seen
    finally:
        listener.close()


def test_refs_commits_and_urls_never_reach_git_as_options(tmp_path):
    marker = tmp_path / "marker"
    source = tmp_path / "source"
    make_repo(source, {"site.yml": "- hosts: all\n"}, branch="main")
    made = checkout(tmp_path, f"file://{source}", name="refs")
    for ref in (f"--upload-pack=touch {marker}", "-h", ""):
        with pytest.raises(CheckoutError, match="not a branch or tag name"):
            made.fetch(ref)
    with pytest.raises(CheckoutError, match="not a commit id"):
        made.fetch("main", commit="--orphan=x")
    with pytest.raises(CheckoutError):
        checkout(tmp_path, f"--upload-pack=touch {marker}", name="url").fetch("main")
    assert not marker.exists()
    assert checkout(tmp_path, f"file://{source}", name="ok").fetch("main")
