"""Self-tests of tests/e2e/realparts.py: the git server, sshd and Ansible really work together."""
from __future__ import annotations

import base64
import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.realparts import (GitHttpServer, SshServer, commit, git, git_http,  # noqa: F401
                                 head, make_repo, ssh_server, tag)

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def served(git_http: GitHttpServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A work repo with two commits and two tags, published as "app"."""
    work = tmp_path_factory.mktemp("work") / "app"
    first = make_repo(work, {"site.yml": "- hosts: all\n  tasks: []\n", "roles/x/README": "x\n"})
    tag(work, "v1", annotated=True)
    second = commit(work, {"site.yml": "- hosts: all\n  gather_facts: false\n  tasks: []\n"}, "second")
    tag(work, "light")
    return {"url": git_http.publish(work, "app"), "first": first, "second": second, "work": work}


def test_repo_helpers(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    sha = make_repo(repo, {"a/b.txt": "hello\n"}, branch="main", message="start")
    assert len(sha) == 40 and head(repo) == sha
    assert git(repo, "symbolic-ref", "--short", "HEAD").stdout.strip() == "main"
    assert git(repo, "log", "-1", "--format=%s").stdout.strip() == "start"
    second = commit(repo, {"a/b.txt": None, "c.txt": "c"}, "move")
    assert head(repo) == second != sha
    assert git(repo, "ls-files").stdout.split() == ["c.txt"]
    assert tag(repo, "t1", annotated=True, ref=sha) == sha
    assert git(repo, "cat-file", "-t", "t1").stdout.strip() == "tag"


def test_clone_with_right_credentials(served: dict, git_http: GitHttpServer, tmp_path: Path) -> None:
    git_http.clear_requests()
    env = git_http.client_env(tmp_path)
    assert git_http.username not in served["url"] and "@" not in served["url"]
    git(None, "clone", "-q", served["url"], str(tmp_path / "clone"), env=env)
    assert head(tmp_path / "clone") == served["second"]
    assert (tmp_path / "clone" / "roles/x/README").read_text() == "x\n"
    # The first request is refused (curl sends no credentials before a 401), then they are sent.
    assert git_http.requests[0].auth_ok is False
    assert any(r.auth_ok and r.path.startswith("/app.git/info/refs") for r in git_http.requests)
    assert any(r.auth_ok and r.method == "POST" and r.path == "/app.git/git-upload-pack"
               for r in git_http.requests)


def test_clone_with_wrong_credentials_fails(served: dict, git_http: GitHttpServer,
                                            tmp_path: Path) -> None:
    git_http.clear_requests()
    result = git(None, "clone", "-q", served["url"], str(tmp_path / "clone"), check=False,
                 env=git_http.client_env(tmp_path, password="wrong"))
    assert result.returncode != 0
    assert "Authentication failed" in result.stderr or "401" in result.stderr, result.stderr
    assert git_http.requests and not any(r.auth_ok for r in git_http.requests)
    # Without any credential helper and no prompt: fails too.
    result = git(None, "clone", "-q", served["url"], str(tmp_path / "clone2"), check=False)
    assert result.returncode != 0


def _pkt(line: str) -> bytes:
    return f"{len(line) + 4:04x}{line}".encode()


def test_http_auth_header_and_gzip_body(served: dict, git_http: GitHttpServer) -> None:
    session = requests.Session()
    session.trust_env = False
    refs = served["url"] + "/info/refs?service=git-upload-pack"
    response = session.get(refs, timeout=10)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Basic ")
    response = session.get(refs, timeout=10, auth=(git_http.username, "nope"))
    assert response.status_code == 401
    response = session.get(refs, timeout=10, auth=(git_http.username, git_http.password))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
    # A gzip'd protocol v0 upload-pack request, as git sends big negotiations.
    body = gzip.compress(_pkt(f"want {served['first']}\n") + b"0000" + _pkt("done\n"))
    response = session.post(served["url"] + "/git-upload-pack", data=body, timeout=10,
                            auth=(git_http.username, git_http.password),
                            headers={"Content-Type": "application/x-git-upload-pack-request",
                                     "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.content[:200]
    assert response.content.startswith(b"0008NAK\n") and b"PACK" in response.content
    response = session.get(served["url"] + "/../etc/passwd", timeout=10,
                           auth=(git_http.username, git_http.password))
    assert response.status_code in (403, 404)


@pytest.mark.parametrize("protocol", ["0", "2"])
def test_shallow_fetch_branch_and_sha_and_ls_remote(served: dict, git_http: GitHttpServer,
                                                    tmp_path: Path, protocol: str) -> None:
    env = git_http.client_env(tmp_path)
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "remote", "add", "origin", served["url"])
    fetch = ["-c", f"protocol.version={protocol}", "fetch", "-q", "--depth", "1", "origin"]
    git(repo, *fetch, "master", env=env)
    assert git(repo, "rev-parse", "FETCH_HEAD").stdout.strip() == served["second"]
    # The first commit is not a ref tip: needs uploadpack.allow*SHA1InWant on the server.
    git(repo, *fetch, served["first"], env=env)
    assert git(repo, "rev-parse", "FETCH_HEAD").stdout.strip() == served["first"]
    assert git(repo, "rev-list", "--count", "FETCH_HEAD").stdout.strip() == "1"  # shallow
    tags = git(repo, "-c", f"protocol.version={protocol}", "ls-remote", "--tags", "origin",
               env=env).stdout
    assert f"{served['first']}\trefs/tags/v1^{{}}" in tags
    assert f"{served['second']}\trefs/tags/light" in tags


def test_publish_again_moves_branch(served: dict, git_http: GitHttpServer, tmp_path: Path) -> None:
    third = commit(served["work"], {"new.txt": "3"}, "third")
    git_http.publish(served["work"], "app")
    out = git(None, "ls-remote", served["url"], "refs/heads/master",
              env=git_http.client_env(tmp_path)).stdout
    assert out.split()[0] == third


def test_push_over_http(served: dict, git_http: GitHttpServer, tmp_path: Path) -> None:
    env = git_http.client_env(tmp_path)
    clone = tmp_path / "clone"
    git(None, "clone", "-q", served["url"], str(clone), env=env)
    sha = commit(clone, {"pushed.bin": os.urandom(300_000)}, "pushed")
    # A pack bigger than http.postBuffer is sent with Transfer-Encoding: chunked.
    git(clone, "-c", "http.postBuffer=65536", "push", "-q", "origin", "HEAD:refs/heads/feature",
        env=env)
    assert git(git_http.repo_path("app"), "rev-parse", "feature").stdout.strip() == sha


def _ssh(server: SshServer, key: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(server.ssh_argv(*command, key_path=key), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)


def test_ssh_with_authorized_key(ssh_server: SshServer, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(base64.b64decode(ssh_server.client_private_key_b64))
    key.chmod(0o600)
    assert ssh_server.client_private_key_pem.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    # The brief's exact command line.
    result = subprocess.run(
        ["ssh", "-i", str(key), "-p", str(ssh_server.port), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
         f"{ssh_server.user}@127.0.0.1", "true"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert result.returncode == 0, result.stderr + ssh_server.log_text()
    result = _ssh(ssh_server, key, "id", "-un")
    assert result.returncode == 0 and result.stdout.strip() == ssh_server.user, result.stderr


def test_ssh_with_other_key_fails(ssh_server: SshServer, tmp_path: Path) -> None:
    key = tmp_path / "other"
    key.write_bytes(base64.b64decode(ssh_server.other_private_key_b64))
    key.chmod(0o600)
    result = _ssh(ssh_server, key, "true")
    assert result.returncode == 255 and "Permission denied" in result.stderr, result.stderr


def test_known_hosts_line_matches_host_key(ssh_server: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(ssh_server.known_hosts_line + "\n")
    argv = ssh_server.ssh_argv("true")
    argv[argv.index("StrictHostKeyChecking=no")] = "StrictHostKeyChecking=yes"
    argv[argv.index(f"UserKnownHostsFile={os.devnull}")] = f"UserKnownHostsFile={known}"
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert result.returncode == 0, result.stderr


def test_sshd_missing_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.e2e.realparts as realparts
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(realparts, "SSHD_CANDIDATES", ())
    with pytest.raises(RuntimeError, match="openssh-server"):
        SshServer(tmp_path)


def test_ansible_playbook_reaches_sshd(ssh_server: SshServer, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(ssh_server.inventory_ini())
    assert "ansible_ssh_common_args='-o StrictHostKeyChecking=no" in inventory.read_text()
    marker = tmp_path / "marker"
    playbook = tmp_path / "play.yml"
    playbook.write_text(f"""\
- hosts: targets
  gather_facts: false
  tasks:
    - ping:
    - command: id -un
      register: who
    - copy:
        dest: {marker}
        content: "{{{{ who.stdout }}}}"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update({"PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
                "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
                "ANSIBLE_REMOTE_TMP": str(tmp_path / "ansible-remote"),
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp"),
                "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
                "ANSIBLE_PIPELINING": "1",  # fewer ssh round trips: faster
                "ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o IdentitiesOnly=yes",
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    result = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok=3" in result.stdout and "failed=0" in result.stdout, result.stdout
    assert marker.read_text() == ssh_server.user
    assert "Accepted publickey" in ssh_server.log_text()

    # The same with the unauthorized key: unreachable.
    other = tmp_path / "other"
    other.write_bytes(ssh_server.other_private_key_pem)
    other.chmod(0o600)
    inventory.write_text(ssh_server.inventory_ini(key_path=other))
    result = subprocess.run([str(VENV_BIN / "ansible"), "-i", str(inventory), "targets", "-m", "ping"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode != 0 and "UNREACHABLE" in result.stdout, result.stdout + result.stderr
