"""Real parts for end-to-end tests: git repositories, a git smart-HTTP server and an OpenSSH server.

Nothing here is a mock:

* `make_repo`, `commit`, `tag`, `head`, `bare_clone`, `push_all` drive the real `git` binary, with
  author and committer given through the environment and every other setting through `-c`, so the
  machine's global or system git configuration is neither read nor written.
* `GitHttpServer` serves the bare repositories of a directory over smart HTTP through
  `git http-backend` (the CGI program shipped with git) behind HTTP Basic auth, from a
  `ThreadingHTTPServer` on 127.0.0.1. Clones, shallow fetches of branches or commit shas, ls-remote
  and pushes work with protocol v0 and v2.
* `SshServer` runs OpenSSH's `sshd` in the foreground on 127.0.0.1 with its own host key and
  configuration, accepting only one freshly generated client key (public key auth only).

The pytest fixtures at the end (`git_http`, `ssh_server`) give one instance of each per test
process; import them into a test module (`from tests.e2e.realparts import git_http, ssh_server`)
or use the classes directly as context managers.

Needs `git`, `ssh`, `ssh-keygen` and `sshd` (Debian: git, openssh-client, openssh-server); `.ci/run`
installs them.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple
from urllib.parse import unquote, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.waiting import DEADLINE, wait_for

PathLike = str | os.PathLike

# Deadlines for a loaded 2-core machine: they turn a hang into a failure, they measure nothing.
GIT_TIMEOUT = 60.0
SSHD_START_TIMEOUT = 60.0

# Variables that would make a git command act on another repository or read foreign config.
_GIT_LOCAL_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                  "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES",
                  "GIT_COMMON_DIR", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
                  "GIT_ASKPASS", "SSH_ASKPASS", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_PROXY_COMMAND")
_PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")

# Server side settings of every served repository: fetching by commit sha, partial clone filters.
SERVER_GIT_CONFIG = {
    "uploadpack.allowReachableSHA1InWant": "true",
    "uploadpack.allowAnySHA1InWant": "true",
    "uploadpack.allowTipSHA1InWant": "true",
    "uploadpack.allowFilter": "true",
    "http.receivepack": "true",
    "safe.directory": "*",
}


# ----------------------------------------------------------------------------------------------
# git repositories
# ----------------------------------------------------------------------------------------------
def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the git commands run here: fixed identity and dates, no global/system
    config, no prompts, no proxies for loopback. `extra` is added last."""
    env = {k: v for k, v in os.environ.items()
           if k not in _GIT_LOCAL_ENV and k not in _PROXY_ENV and not k.startswith("GIT_CONFIG_")}
    env.update({
        "GIT_AUTHOR_NAME": "Runner Tests", "GIT_AUTHOR_EMAIL": "tests@runner.invalid",
        "GIT_COMMITTER_NAME": "Runner Tests", "GIT_COMMITTER_EMAIL": "tests@runner.invalid",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "LC_ALL": "C",
    })
    env.update(extra or {})
    return env


def git(path: PathLike | None, *args: str, env: Mapping[str, str] | None = None,
        check: bool = True, timeout: float = GIT_TIMEOUT) -> subprocess.CompletedProcess:
    """Run `git -C path args...` (text mode, output captured); raises with git's output on failure."""
    argv = ["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false",
            "-c", "init.defaultBranch=master", "-c", "advice.detachedHead=false"]
    if path is not None:
        argv += ["-C", os.fspath(path)]
    argv += list(args)
    result = subprocess.run(argv, env=git_env(env), stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {result.returncode}):\n"
                           f"{result.stdout}{result.stderr}")
    return result


def _write_files(root: Path, files: Mapping[str, str | bytes | None]) -> None:
    for name, content in files.items():
        target = root / name
        if content is None:  # None removes the file
            target.unlink(missing_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")


def head(path: PathLike) -> str:
    """The sha of HEAD."""
    return git(path, "rev-parse", "HEAD").stdout.strip()


def commit(path: PathLike, files: Mapping[str, str | bytes | None], message: str = "change") -> str:
    """Write `files` (relative path -> content; None deletes), commit everything, return the new sha.

    A commit is made even when nothing changed (--allow-empty)."""
    _write_files(Path(path), files)
    git(path, "add", "-A")
    git(path, "commit", "-q", "--allow-empty", "-m", message)
    return head(path)


def make_repo(path: PathLike, files: Mapping[str, str | bytes | None], branch: str = "master",
              message: str = "initial") -> str:
    """A new non-bare repository at `path` (created if needed) on `branch` with `files` committed;
    returns the sha of HEAD."""
    Path(path).mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    return commit(path, files, message)


def tag(path: PathLike, name: str, annotated: bool = False, ref: str = "HEAD",
        message: str | None = None) -> str:
    """Tag `ref` (lightweight, or annotated with `message`); returns the sha of the tagged commit."""
    if annotated:
        git(path, "tag", "-a", "-m", message or f"tag {name}", name, ref)
    else:
        git(path, "tag", name, ref)
    return git(path, "rev-parse", f"{name}^{{commit}}").stdout.strip()


def configure_for_serving(bare: PathLike) -> None:
    """Write SERVER_GIT_CONFIG into a bare repository's own config."""
    for key, value in SERVER_GIT_CONFIG.items():
        if key != "safe.directory":  # only honoured from global/system/command-line config
            git(bare, "config", key, value)


def bare_clone(src: PathLike, dest: PathLike) -> Path:
    """A bare copy of `src` at `dest` (all branches and tags), configured for serving; returns dest."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    git(None, "clone", "-q", "--bare", "--no-local", os.fspath(src), os.fspath(dest))
    configure_for_serving(dest)
    return dest


def push_all(src: PathLike, bare: PathLike) -> None:
    """Make the branches and tags of bare repository `bare` those of `src` again (forced; branches
    and tags deleted in `src` are deleted too), e.g. after new commits or a moved tag."""
    git(src, "push", "-q", "--force", "--prune", os.fspath(bare),
        "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*")


def askpass_env(directory: PathLike, username: str, password: str) -> dict[str, str]:
    """Environment variables that make a git client answer HTTP auth prompts with these credentials
    (GIT_ASKPASS script reading them from the environment) and never prompt on a terminal.

    Merge into the environment of a git command; the credentials never appear in a URL or argv."""
    script = Path(directory) / "askpass.sh"
    if not script.exists():
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text('#!/bin/sh\ncase "$1" in\n'
                          '  [Uu]sername*) printf \'%s\\n\' "$REALPARTS_GIT_USERNAME" ;;\n'
                          '  *) printf \'%s\\n\' "$REALPARTS_GIT_PASSWORD" ;;\nesac\n')
        script.chmod(0o700)
    return {"GIT_ASKPASS": str(script), "GIT_TERMINAL_PROMPT": "0",
            "REALPARTS_GIT_USERNAME": username, "REALPARTS_GIT_PASSWORD": password}


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# git over smart HTTP
# ----------------------------------------------------------------------------------------------
class Request(NamedTuple):
    """One HTTP request the git server received; `path` as sent (with the query string)."""

    method: str
    path: str
    auth_ok: bool


def _http_backend() -> str:
    exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True,
                               check=True).stdout.strip()
    backend = Path(exec_path) / "git-http-backend"
    if not os.access(backend, os.X_OK):
        raise RuntimeError(f"git-http-backend not found at {backend}: install git")
    return str(backend)


class GitHttpServer:
    """Serves the bare repositories under `repos_root` (e.g. `<root>/app.git`) over smart HTTP.

    Every request needs HTTP Basic auth with `username`/`password` (401 with WWW-Authenticate
    otherwise); with `username=None` no auth is asked for. Requests are recorded in `.requests`.

        with GitHttpServer(root, "alice", "s3cret") as server:
            server.publish(work_repo, "app")          # -> server.url("app")
            ... git clone server.url("app") ...
    """

    def __init__(self, repos_root: PathLike, username: str | None, password: str | None) -> None:
        self.repos_root = Path(repos_root).resolve()
        self.username = username
        self.password = password
        self.requests: list[Request] = []
        self.errors: list[str] = []  # stderr of git http-backend runs that wrote some
        self.port: int | None = None
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._backend = _http_backend()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "GitHttpServer":
        if self._httpd is not None:
            raise RuntimeError("already started")
        self.repos_root.mkdir(parents=True, exist_ok=True)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"git-http-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> "GitHttpServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- use --------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("not started")
        return f"http://127.0.0.1:{self.port}"

    def url(self, repo_name: str) -> str:
        """http://127.0.0.1:PORT/<repo_name>.git (".git" not doubled)."""
        name = repo_name.strip("/")
        return f"{self.base_url}/{name if name.endswith('.git') else name + '.git'}"

    def repo_path(self, repo_name: str) -> Path:
        name = repo_name.strip("/")
        return self.repos_root / (name if name.endswith(".git") else name + ".git")

    def publish(self, src: PathLike, repo_name: str) -> str:
        """Serve a bare clone of work repository `src` as `repo_name` (or refresh it with `src`'s
        branches and tags if already served); returns its URL."""
        bare = self.repo_path(repo_name)
        if bare.exists():
            push_all(src, bare)
        else:
            bare_clone(src, bare)
        return self.url(repo_name)

    def client_env(self, directory: PathLike, username: str | None = None,
                   password: str | None = None) -> dict[str, str]:
        """askpass_env with this server's credentials (or the ones given)."""
        return askpass_env(directory, self.username if username is None else username,
                           self.password if password is None else password)

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _auth_ok(self, header: str | None) -> bool:
        if self.username is None:
            return True
        if not header or not header[:6].lower() == "basic ":
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        expected = f"{self.username}:{self.password or ''}".encode()
        return bool(sep) and hmac.compare_digest(f"{user}:{password}".encode(), expected)

    def _cgi_env(self, handler: BaseHTTPRequestHandler, path_info: str, query: str,
                 body_length: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k in ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "SYSTEMROOT")}
        config = dict(SERVER_GIT_CONFIG)
        env.update({
            "GIT_PROJECT_ROOT": str(self.repos_root), "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_COUNT": str(len(config)),
            "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": handler.request_version,
            "SERVER_SOFTWARE": "realparts-git-http", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(self.port), "REMOTE_ADDR": handler.client_address[0],
            "REQUEST_METHOD": handler.command, "PATH_INFO": path_info, "QUERY_STRING": query,
            "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(body_length),
            "REMOTE_USER": self.username or "anonymous",
        })
        for index, (key, value) in enumerate(config.items()):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
        for header, variable in (("Content-Encoding", "HTTP_CONTENT_ENCODING"),
                                 ("Git-Protocol", "HTTP_GIT_PROTOCOL"),
                                 ("Accept", "HTTP_ACCEPT"), ("User-Agent", "HTTP_USER_AGENT")):
            value = handler.headers.get(header)
            if value:
                env[variable] = value
        return env


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, de-chunked if sent with Transfer-Encoding: chunked."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size_line = handler.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline(65537)  # CRLF after the chunk
        return b"".join(chunks)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _parse_cgi_output(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of a CGI response."""
    ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := output.find(sep)) >= 0]
    if not ends:
        return 502, [], b"malformed CGI output: " + output[:200]
    index, sep_len = min(ends)
    status, headers = 200, []
    for line in output[:index].decode("latin-1").splitlines():
        if not line.strip():
            continue
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            status = int(value.split()[0])
        else:
            headers.append((name, value))
    return status, headers, output[index + sep_len:]


def _make_handler(server: GitHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "realparts-git-http"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
            pass

        def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _handle(self) -> None:
            body = _read_body(self)  # always consumed, so that the connection stays usable
            auth_ok = server._auth_ok(self.headers.get("Authorization"))
            server._record(Request(self.command, self.path, auth_ok))
            if not auth_ok:
                self._send(401, [("WWW-Authenticate", 'Basic realm="realparts git"'),
                                 ("Content-Type", "text/plain")], b"authentication required\n")
                return
            parts = urlsplit(self.path)
            path_info = unquote(parts.path)
            if ".." in path_info.split("/"):
                self._send(403, [("Content-Type", "text/plain")], b"forbidden\n")
                return
            try:
                result = subprocess.run([server._backend], input=body, capture_output=True,
                                        env=server._cgi_env(self, path_info, parts.query, len(body)),
                                        timeout=GIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._send(504, [("Content-Type", "text/plain")], b"git http-backend timed out\n")
                return
            if result.stderr:
                with server._lock:
                    server.errors.append(result.stderr.decode("utf-8", "replace"))
            if not result.stdout:
                self._send(500, [("Content-Type", "text/plain")],
                           b"git http-backend failed: " + result.stderr)
                return
            self._send(*_parse_cgi_output(result.stdout))

        do_GET = do_POST = do_HEAD = _handle

    return Handler


# ----------------------------------------------------------------------------------------------
# OpenSSH server
# ----------------------------------------------------------------------------------------------
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


def _find_sshd() -> str:
    for candidate in (shutil.which("sshd"), *SSHD_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)  # sshd re-execs itself: needs an absolute path
    raise RuntimeError("OpenSSH sshd not found: install openssh-server "
                       "(Debian/Ubuntu: apt-get install -y openssh-server; .ci/run does it)")


def _new_key(comment: str) -> tuple[bytes, str]:
    """(private key as OpenSSH PEM, public key line) of a new ed25519 key."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode("ascii")
    return private, f"{public} {comment}"


def _write_private(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)  # ssh and sshd refuse keys others can read
    return path


def _descendants(pid: int) -> list[int]:
    """Process ids of all descendants of `pid` (from /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def _account_locked(user: str) -> bool:
    """Whether sshd without PAM would refuse `user` as locked ('!' password in /etc/shadow)."""
    try:
        with open("/etc/shadow", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split(":")
                if fields[0] == user and len(fields) > 1:
                    return fields[1].startswith("!")
    except OSError:
        pass
    return False


class SshServer:
    """A real OpenSSH sshd on 127.0.0.1:<free port>, as the current user, public key auth only.

    Only the generated client key (`client_private_key_pem`/`_b64`/`_path`) is authorized;
    `other_private_key_*` is a valid key that is NOT, for negative tests. Files live in `tmpdir`.
    """

    host = "127.0.0.1"

    def __init__(self, tmpdir: PathLike) -> None:
        self.dir = Path(tmpdir).resolve()
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._sshd = _find_sshd()
        self.config_path = self.dir / "sshd_config"
        self.log_path = self.dir / "sshd.log"
        self.pid_path = self.dir / "sshd.pid"
        self.authorized_keys_path = self.dir / "authorized_keys"
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.client_private_key_path = self.dir / "client_ed25519"
        self.other_private_key_path = self.dir / "other_ed25519"
        self.known_hosts_path = self.dir / "known_hosts"
        self.client_private_key_pem = b""
        self.client_public_key = ""
        self.other_private_key_pem = b""
        self.host_public_key = ""

    # -- keys -------------------------------------------------------------------------------
    @property
    def client_private_key_b64(self) -> str:
        """Base64 of the authorized client key's PEM, as the API takes private keys."""
        return base64.b64encode(self.client_private_key_pem).decode("ascii")

    @property
    def other_private_key_b64(self) -> str:
        """Base64 of the PEM of a key sshd does NOT accept."""
        return base64.b64encode(self.other_private_key_pem).decode("ascii")

    @property
    def known_hosts_line(self) -> str:
        """`[127.0.0.1]:PORT ssh-ed25519 AAAA...` for a known_hosts file."""
        return f"[{self.host}]:{self.port} {self.host_public_key}"

    def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        host_private, host_public = _new_key("realparts-host")
        _write_private(self.host_key_path, host_private)
        self.host_public_key = " ".join(host_public.split()[:2])
        (self.dir / "ssh_host_ed25519_key.pub").write_text(host_public + "\n")
        self.client_private_key_pem, self.client_public_key = _new_key("realparts-client")
        _write_private(self.client_private_key_path, self.client_private_key_pem)
        self.other_private_key_pem, _ = _new_key("realparts-other")
        _write_private(self.other_private_key_path, self.other_private_key_pem)
        self.authorized_keys_path.write_text(self.client_public_key + "\n")
        self.authorized_keys_path.chmod(0o600)
        if os.geteuid() == 0:  # privilege separation directory, checked by sshd when run as root
            privsep = Path("/run/sshd")
            try:
                privsep.mkdir(mode=0o755, exist_ok=True)
                if privsep.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    privsep.chmod(0o755)
            except OSError as error:
                raise RuntimeError(f"cannot create sshd's privilege separation dir /run/sshd: {error}")
        if _account_locked(self.user):
            raise RuntimeError(f"account {self.user!r} is locked ('!' password in /etc/shadow); sshd "
                               f"without PAM refuses it even with a key: run `usermod -p '*' "
                               f"{self.user}` on this test machine")

    def _write_config(self) -> None:
        sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                                 "/usr/libexec/sftp-server") if os.access(p, os.X_OK)), "internal-sftp")
        self.config_path.write_text("\n".join([
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.pid_path}",
            f"AuthorizedKeysFile {self.authorized_keys_path}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "PermitEmptyPasswords no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "PermitUserEnvironment no",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "LoginGraceTime 30",
            "LogLevel VERBOSE",
            "AcceptEnv LANG LC_*",
            f"Subsystem sftp {sftp}",
            "",
        ]))

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = SSHD_START_TIMEOUT) -> "SshServer":
        if self.running:
            raise RuntimeError("already started")
        self._prepare()
        for attempt in range(3):  # another process may take the free port before sshd binds it
            self.port = free_port()
            self._write_config()
            self.log_path.write_bytes(b"")
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [self._sshd, "-D", "-e", "-f", str(self.config_path)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"})
            if self._wait_listening(timeout):
                return self
            log_text = self.log_text()
            self.stop()
            if "Address already in use" not in log_text or attempt == 2:
                raise RuntimeError(f"sshd did not start on {self.host}:{self.port}:\n{log_text}")
        raise AssertionError("unreachable")

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    sock.settimeout(2)
                    if sock.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)  # paces the polling for sshd's banner
        return False

    def stop(self) -> None:
        """Stop sshd and every session it forked (they are in sessions of their own)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            sessions = _descendants(process.pid)
            process.terminate()
            for pid in reversed(sessions):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "SshServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    # -- clients ----------------------------------------------------------------------------
    def ssh_argv(self, *command: str, key_path: PathLike | None = None) -> list[str]:
        """`ssh` argv running `command` on this server with the authorized key (or `key_path`),
        ignoring the user's ssh config, agent and known_hosts."""
        return ["ssh", "-F", os.devnull, "-i", os.fspath(key_path or self.client_private_key_path),
                "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                "-o", f"UserKnownHostsFile={os.devnull}", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "ConnectTimeout=10",
                "-o", "LogLevel=ERROR", f"{self.user}@{self.host}", *command]

    @property
    def python_interpreter(self) -> str:
        """A Python known to work on this (same) machine: /usr/bin/python3, else the test's own.

        Ansible's interpreter discovery follows the login shell's PATH, which may hold broken
        shims (pyenv), so the inventory names one."""
        return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

    def ansible_host_vars(self, key_path: PathLike | None = None) -> dict[str, str]:
        """Inventory variables that make Ansible reach this server with the authorized key."""
        return {
            "ansible_host": self.host,
            "ansible_port": str(self.port),
            "ansible_user": self.user,
            "ansible_ssh_private_key_file": os.fspath(key_path or self.client_private_key_path),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "ansible_python_interpreter": self.python_interpreter,
        }

    def inventory_ini(self, name: str = "127.0.0.1", key_path: PathLike | None = None,
                      group: str = "targets") -> str:
        """An INI inventory with this server as host `name` in `group`."""
        pairs = " ".join(f"{k}='{v}'" if " " in v else f"{k}={v}"
                         for k, v in self.ansible_host_vars(key_path).items())
        return f"[{group}]\n{name} {pairs}\n"


# ----------------------------------------------------------------------------------------------
# pytest fixtures (one instance of each per test process)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def git_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHttpServer]:
    """A GitHttpServer with random credentials (`.username`, `.password`); `publish` repos into it."""
    root = tmp_path_factory.mktemp("git-http")
    with GitHttpServer(root / "repos", "runner-tests", secrets.token_urlsafe(12)) as server:
        yield server


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A running SshServer accepting only its `client_private_key_*`."""
    with SshServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


class Receiver:
    """A webhook receiver: records every POST; `fail_first[path] = n` answers 500 n times first."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.fail_first: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    left = receiver.fail_first.get(self.path, 0)
                    if left:
                        receiver.fail_first[self.path] = left - 1
                    else:
                        receiver.received.append({"path": self.path, "headers": dict(self.headers), "raw": raw,
                                                  "at": time.time()})
                self.send_response(500 if left else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> list[dict]:
        """Received payloads of a path, de-duplicated by deliveryId, in seq order."""
        with self.lock:
            found = {json.loads(item["raw"])["deliveryId"]: json.loads(item["raw"])
                     for item in self.received if item["path"] == path}
        return sorted(found.values(), key=lambda body: body["seq"])

    def wait_for(self, path: str, predicate, timeout: float = DEADLINE) -> list[dict]:
        """The payloads of a path (as `bodies`), once `predicate(payloads)` holds."""
        return wait_for(lambda: self.bodies(path), predicate, timeout,
                        lambda bodies: f"{path}: condition not met; got {[(b['type'], b['status']) for b in bodies]}")
