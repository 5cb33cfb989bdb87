"""Galaxy requirements of a checkout: checked against the repository rules, installed into the
attempt's workspace with ansible-galaxy, and cached.

A repository may carry `requirements.yml`, `roles/requirements.yml` and
`collections/requirements.yml`. Before anything runs, every source they name is held to the
repository rules: a git source must be a URL the job's own repository could have (`https`,
`ssh`; `file` and `http` in local mode), a role or collection by name comes from the Galaxy
server, and nothing else (a tarball URL, a path on the worker, another server) is installed.
Then each git source is resolved to the commit its version names (`git ls-remote`), so that the
cache key moves when a branch does; the key is the hash of the files' content and of what they
resolved to.

Installs are cached as gzipped tarballs: in a directory of `/tmp` while the environment is warm,
and in the stack's S3 bucket when there is one, so that a cold worker does not install again.
A playbook runs as the worker's user and can read and write `/tmp`, and the next run may be
another account's (whose private roles must stay private), so the directory is never trusted
as it is: each tarball there is sealed with AES-256-GCM under a key that lives only in the
worker's memory (closed to the playbook, see isolation.close_worker), its cache key as
associated data; one that does not open, or whose SHA-256 is not the one remembered, is
dropped; between runs everything in the directory that the worker did not write is removed.
The S3 copy is written before the playbook starts, with credentials the playbook never sees; a
worker finds it only under the hash of content and commits it could resolve itself (a private
git source resolves only with credentials for it).

Known limits: what galaxy pulls in as dependencies of the roles and collections named here is
not checked one by one; it is bounded by the transports git may use (GIT_ALLOW_PROTOCOL) and by
the one Galaxy server galaxy is given (no ansible.cfg of the repository applies). A Galaxy
requirement without an exact version is cached for the day (UTC): a newer release is picked up
the next day at the latest.
"""
from __future__ import annotations

import configparser
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import yaml
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chalicelib.jobs.spec import validate_repository_url
from chalicelib.platform.config import RepositoryRules
from chalicelib.platform.errors import InvalidRequest
from runner_lambda.checkout import CheckoutError
from runner_lambda.isolation import SCRATCH

logger = logging.getLogger("runner.worker")

# Where requirements may sit in a repository, in the order they are installed.
REQUIREMENT_FILES = ("requirements.yml", "roles/requirements.yml", "collections/requirements.yml")
GALAXY_SERVER = "https://galaxy.ansible.com"
GALAXY_TIMEOUT_SECONDS = 600
MAX_REQUIREMENTS_BYTES = 256 * 1024
# The S3 objects of the cache (the worker's role may read and write only these).
S3_PREFIX = "galaxy/"
# The /tmp cache: at most this much, least recently used entries evicted first.
TMP_CACHE_BYTES = 256 * 1024 * 1024
CACHE_FORMAT = 1
COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
GALAXY_NAME = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$")
# A version that names one release (1.2.3, v1.2.3, ==1.2.3), as opposed to a range or nothing.
EXACT_VERSION = re.compile(r"^(==)?v?[0-9][0-9A-Za-z.+_-]*$")


class GalaxyError(Exception):
    """The requirements are refused or could not be installed (an INIT_FAILURE)."""


@dataclass(frozen=True)
class Source:
    """One requirement: a role or a collection, where it comes from, and the version asked for."""

    kind: str  # "role" | "collection"
    origin: str  # "galaxy" | "git" | "file"
    location: str  # a Galaxy name, a git URL, a file:// URL
    version: str
    where: str  # how an error names it: "roles/requirements.yml roles[0]"


@dataclass
class RequirementsFile:
    """One requirements file of the checkout: its text, and which sections it holds."""

    name: str
    path: Path
    content: bytes
    roles: list = field(default_factory=list)
    collections: list = field(default_factory=list)


@dataclass
class Installed:
    """What an install left in the workspace, and how it went (for the logs and the benchmark)."""

    roles_path: Path | None
    collections_path: Path | None
    cache: str  # "tmp" | "s3" | "none" (installed now)
    seconds: float
    key: str | None


# --- reading and checking -----------------------------------------------------------------------

def find_requirements(project: Path) -> list[RequirementsFile]:
    """The requirements files of a checkout, parsed; GalaxyError when one is not a requirements file."""
    found = []
    root = project.resolve()
    for name in REQUIREMENT_FILES:
        path = project / name
        if not path.is_file():
            continue
        if root not in path.resolve().parents:
            raise GalaxyError(f"{name} leaves the repository")
        content = path.read_bytes()
        if len(content) > MAX_REQUIREMENTS_BYTES:
            raise GalaxyError(f"{name} is larger than {MAX_REQUIREMENTS_BYTES} bytes")
        try:
            document = yaml.safe_load(content)
        except yaml.YAMLError as exc:
            raise GalaxyError(f"{name} is not valid YAML: {exc}") from None
        requirements = RequirementsFile(name, path, content)
        if isinstance(document, list):  # the old format: roles only
            requirements.roles = document
        elif isinstance(document, dict):
            requirements.roles = document.get("roles") or []
            requirements.collections = document.get("collections") or []
            if not isinstance(requirements.roles, list) or not isinstance(requirements.collections, list):
                raise GalaxyError(f"{name}: roles and collections must be lists")
        elif document is not None:
            raise GalaxyError(f"{name} must hold a list of roles, or roles and collections")
        if requirements.roles or requirements.collections:
            found.append(requirements)
    return found


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def role_source(entry: Any, where: str) -> Source:
    """A role requirement as ansible-galaxy reads it (RoleRequirement.role_yaml_parse)."""
    from ansible.errors import AnsibleError
    from ansible.playbook.role.requirement import RoleRequirement

    if isinstance(entry, dict) and "include" in entry:
        raise GalaxyError(f"{where}: 'include' is not supported; list the roles in the file itself")
    if not isinstance(entry, (str, dict)):
        raise GalaxyError(f"{where} must be a string or a mapping")
    try:
        parsed = RoleRequirement.role_yaml_parse(entry if isinstance(entry, str) else dict(entry))
    except AnsibleError as exc:
        raise GalaxyError(f"{where}: {exc}") from None
    src = _text(parsed.get("src")) or _text(parsed.get("name"))
    scm = _text(parsed.get("scm"))
    version = _text(parsed.get("version"))
    if scm:
        if scm != "git":
            raise GalaxyError(f"{where}: scm {scm!r} is not supported; only git")
        return Source("role", "git", src, version, where)
    if src.startswith("file://"):
        return Source("role", "file", src, version, where)
    if "://" in src or not GALAXY_NAME.match(src):
        raise GalaxyError(f"{where}: {src!r} is neither a git source (git+URL) nor a role of the Galaxy server")
    return Source("role", "galaxy", src, version, where)


def collection_source(entry: Any, where: str) -> Source:
    """A collection requirement as ansible-galaxy reads it: its type, given or guessed from the name."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict):
        raise GalaxyError(f"{where} must be a string or a mapping")
    name = _text(entry.get("name"))
    version = _text(entry.get("version"))
    kind = _text(entry.get("type"))
    if not name:
        raise GalaxyError(f"{where} names no collection")
    if name.startswith("git+"):
        kind, name = kind or "git", name[len("git+"):]
    if kind == "git" and "," in name and not version:
        name, version = name.rsplit(",", 1)
    if not kind:
        kind = "url" if "://" in name else "galaxy"
    if kind == "git":
        return Source("collection", "git", name.split("#", 1)[0], version, where)
    if kind == "url" and name.startswith("file://"):
        return Source("collection", "file", name, version, where)
    if kind == "galaxy":
        source = _text(entry.get("source"))
        if source and source.rstrip("/") != GALAXY_SERVER:
            raise GalaxyError(f"{where}: source {source!r} is not the Galaxy server ({GALAXY_SERVER})")
        if not GALAXY_NAME.match(name):
            raise GalaxyError(f"{where}: {name!r} is not a collection name (namespace.name)")
        return Source("collection", "galaxy", name, version, where)
    raise GalaxyError(f"{where}: collections of type {kind!r} are not supported; "
                      "use a git source or the Galaxy server")


def sources_of(files: list[RequirementsFile]) -> list[Source]:
    """Every requirement of the files, in order."""
    found = []
    for requirements in files:
        found += [role_source(entry, f"{requirements.name} roles[{index}]")
                  for index, entry in enumerate(requirements.roles)]
        found += [collection_source(entry, f"{requirements.name} collections[{index}]")
                  for index, entry in enumerate(requirements.collections)]
    return found


def check_sources(sources: list[Source], rules: RepositoryRules) -> None:
    """Every source must be one the repository rules allow; GalaxyError naming the first that is not."""
    for source in sources:
        if source.origin == "galaxy":
            continue
        if source.origin == "file" and "file" not in rules.schemes:
            raise GalaxyError(f"{source.where}: {source.location!r}: file:// sources are not allowed here")
        try:
            validate_repository_url(source.location, rules, source.where)
        except InvalidRequest as refused:
            raise GalaxyError(f"{source.where}: {refused.message}") from None
        if source.version.startswith("-"):
            raise GalaxyError(f"{source.where}: version {source.version!r} must not start with '-'")


# --- the cache key ------------------------------------------------------------------------------

def resolve(source: Source, ls_remote: Callable[[str, list[str]], str], today: str) -> str | None:
    """What a source stands for now: a git commit, a Galaxy release, a file's hash; None: not cacheable."""
    if source.origin == "git":
        return f"git {source.location} {resolve_git(source, ls_remote)}"
    if source.origin == "galaxy":
        exact = bool(source.version) and EXACT_VERSION.match(source.version) is not None
        return f"galaxy {source.kind} {source.location} {source.version or '*'}{'' if exact else ' ' + today}"
    path = Path(urlsplit(source.location).path)
    if not path.is_file():
        return None
    return f"file {source.location} {hashlib.sha256(path.read_bytes()).hexdigest()}"


def resolve_git(source: Source, ls_remote: Callable[[str, list[str]], str]) -> str:
    """The commit a git source's version names (its default branch without one)."""
    version = source.version
    if version and COMMIT.match(version) and len(version) >= 40:
        return version
    refs = ["HEAD"] if not version else [f"refs/heads/{version}", f"refs/tags/{version}", f"refs/tags/{version}^{{}}"]
    found: dict[str, str] = {}
    try:
        listing = ls_remote(source.location, refs)
    except CheckoutError as exc:
        raise GalaxyError(f"{source.where}: {exc}") from None
    for line in listing.splitlines():
        sha, _, ref = line.partition("\t")
        found[ref.strip()] = sha.strip()
    for ref in reversed(refs):  # a peeled tag, then the tag, then the branch
        if ref in found:
            return found[ref]
    if version and COMMIT.match(version):
        return version  # an abbreviated commit: it cannot move
    raise GalaxyError(f"{source.where}: {source.location} has no branch or tag {version or 'HEAD'!r}")


def cache_key(files: list[RequirementsFile], resolved: list[str], ansible_version: str) -> str:
    """The hash of the files' content and of what their sources resolved to."""
    document = {"format": CACHE_FORMAT, "ansible": ansible_version, "resolved": resolved,
                "files": [[item.name, hashlib.sha256(item.content).hexdigest()] for item in files]}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


# --- the cache ----------------------------------------------------------------------------------

def pack(directory: Path) -> bytes:
    """A gzipped tarball of a directory's contents."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
        for child in sorted(directory.iterdir()):
            archive.add(child, arcname=child.name)
    return buffer.getvalue()


def unpack(data: bytes, directory: Path) -> None:
    """Extract a tarball made by `pack` (tarfile's "data" filter: nothing lands outside `directory`)."""
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        archive.extractall(directory, filter="data")


class InstallCache:
    """Installed requirements by cache key: /tmp while the environment is warm, S3 when a bucket is set."""

    def __init__(self, s3: Any = None, bucket: str = "", max_bytes: int = TMP_CACHE_BYTES,
                 directory: Path | None = None) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._max_bytes = max_bytes
        # A directory of this process's own; what is in it counts only if listed here (key ->
        # SHA-256 of the tarball), in memory the playbook cannot reach.
        self.directory = directory or SCRATCH / f"galaxy-cache-{os.getpid()}"
        self._sealing = AESGCM(AESGCM.generate_key(bit_length=256))
        self._digests: dict[str, str] = {}
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.tar.gz"

    def get(self, key: str) -> tuple[bytes, str] | None:
        """The tarball of `key` and where it came from ("tmp" or "s3"); None on a miss."""
        with self._lock:
            digest = self._digests.get(key)
        if digest is not None:
            data = self._open(key, self._read_tmp(key))
            if data is not None and hashlib.sha256(data).hexdigest() == digest:
                self._used[key] = time.monotonic()
                return data, "tmp"
            logger.warning("galaxy cache entry %s was changed or removed since it was written; ignored", key)
            self._forget(key)
        if not self._bucket:
            return None
        try:
            data = self._s3.get_object(Bucket=self._bucket, Key=f"{S3_PREFIX}{key}.tar.gz")["Body"].read()
        except ClientError as exc:
            # Without s3:ListBucket a missing object answers 403, not 404: a miss either way.
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404", "403", "AccessDenied"):
                logger.warning("galaxy cache: S3 read failed: %s", exc)
            return None
        except BotoCoreError as exc:
            logger.warning("galaxy cache: S3 read failed: %s", exc)
            return None
        self._keep(key, data)
        return data, "s3"

    def put(self, key: str, data: bytes) -> None:
        """Keep a tarball in /tmp and in S3 (failures there only cost a later install)."""
        self._keep(key, data)
        if not self._bucket:
            return
        try:
            self._s3.put_object(Bucket=self._bucket, Key=f"{S3_PREFIX}{key}.tar.gz", Body=data)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("galaxy cache: S3 write failed: %s", exc)

    def _read_tmp(self, key: str) -> bytes | None:
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            return handle.read(self._max_bytes + 64)

    def _seal(self, key: str, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._sealing.encrypt(nonce, data, key.encode("ascii"))

    def _open(self, key: str, sealed: bytes | None) -> bytes | None:
        if sealed is None or len(sealed) < 12:
            return None
        try:
            return self._sealing.decrypt(sealed[:12], sealed[12:], key.encode("ascii"))
        except InvalidTag:
            return None

    def _keep(self, key: str, data: bytes) -> None:
        if len(data) > self._max_bytes:
            return
        with self._lock:
            self._evict(self._max_bytes - len(data))
            try:
                self._own_directory()
                temporary = self.directory / f".{key}.{os.getpid()}.part"
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(self._seal(key, data))
                os.replace(temporary, self._path(key))
            except OSError as exc:
                logger.warning("galaxy cache: /tmp write failed: %s", exc)
                return
            self._digests[key] = hashlib.sha256(data).hexdigest()
            self._used[key] = time.monotonic()

    def _own_directory(self) -> None:
        """The cache directory as this worker made it: a real directory, 0700; else made again."""
        try:
            status = os.lstat(self.directory)
        except FileNotFoundError:
            self.directory.mkdir(mode=0o700)
            return
        if not os.path.isdir(self.directory) or os.path.islink(self.directory) or status.st_uid != os.getuid():
            self._remove_directory()
            self._digests.clear()
            self.directory.mkdir(mode=0o700)
        else:
            self.directory.chmod(0o700)

    def _remove_directory(self) -> None:
        if os.path.islink(self.directory) or not os.path.isdir(self.directory):
            self.directory.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _evict(self, room: int) -> None:
        total = sum(self._size(key) for key in self._digests)
        for key in sorted(self._digests, key=lambda name: self._used.get(name, 0.0)):
            if total <= room:
                return
            total -= self._size(key)
            self._path(key).unlink(missing_ok=True)
            self._digests.pop(key, None)
            self._used.pop(key, None)

    def _size(self, key: str) -> int:
        try:
            return os.lstat(self._path(key)).st_size
        except OSError:
            return 0

    def _forget(self, key: str) -> None:
        with self._lock:
            self._digests.pop(key, None)
            self._used.pop(key, None)
            try:
                self._path(key).unlink(missing_ok=True)
            except OSError:
                pass

    def prune(self) -> None:
        """Between runs: remove from the directory everything this worker did not put there."""
        with self._lock:
            if not os.path.lexists(self.directory):
                self._digests.clear()
                return
            if os.path.islink(self.directory) or not os.path.isdir(self.directory):
                self._remove_directory()
                self._digests.clear()
                return
            known = {self._path(key).name for key in self._digests}
            for entry in os.scandir(self.directory):
                if entry.name not in known or not entry.is_file(follow_symlinks=False):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)


# --- installing ---------------------------------------------------------------------------------

def _configured_paths(project: Path, option: str) -> list[str]:
    """A path list from the repository's own ansible.cfg ([defaults]), as absolute paths."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(project / "ansible.cfg", encoding="utf-8")
        value = parser.get("defaults", option, fallback="")
    except (configparser.Error, UnicodeDecodeError):
        return []
    return [str((project / os.path.expanduser(item.strip())).resolve()) for item in value.split(":") if item.strip()]


def playbook_environment(installed: Installed | None, project: Path) -> dict[str, str]:
    """Where the playbook finds what was installed, ahead of the paths the repository's ansible.cfg names."""
    if installed is None:
        return {}
    env = {}
    if installed.roles_path is not None:
        env["ANSIBLE_ROLES_PATH"] = ":".join([str(installed.roles_path), *_configured_paths(project, "roles_path")])
    if installed.collections_path is not None:
        configured = _configured_paths(project, "collections_path") or _configured_paths(project, "collections_paths")
        env["ANSIBLE_COLLECTIONS_PATH"] = ":".join([str(installed.collections_path), *configured])
    return env


def _error_lines(output: str) -> str:
    """galaxy's error: from its first error line on (its explanation follows it), without warnings."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    first = next((index for index, line in enumerate(lines)
                  if re.search(r"ERROR|NOT installed|fatal|failed", line)), max(0, len(lines) - 3))
    return "; ".join(line for line in lines[first:] if not line.startswith("[WARNING]"))


class GalaxyInstaller:
    """Installs a checkout's requirements into one attempt's workspace."""

    def __init__(self, cache: InstallCache | None, rules: RepositoryRules, git_environment: dict[str, str],
                 ls_remote: Callable[[str, list[str]], str], mask: Callable[[str], str], run_id: str = "",
                 extra_environment: dict[str, str] | None = None) -> None:
        self._cache = cache
        self._rules = rules
        self._git_environment = git_environment
        self._ls_remote = ls_remote
        self._mask = mask
        self._run_id = run_id
        self._extra = extra_environment or {}

    def install(self, project: Path, destination: Path) -> Installed | None:
        """Install what the checkout requires into `destination`; None when it requires nothing."""
        started = time.monotonic()
        files = find_requirements(project)
        if not files:
            return None
        sources = sources_of(files)
        check_sources(sources, self._rules)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        resolved = [resolve(source, self._ls_remote, today) for source in sources]
        key = None if None in resolved else cache_key(files, [item for item in resolved if item], _ansible_version())
        roles = destination / "roles" if any(item.roles for item in files) else None
        collections = destination / "collections" if any(item.collections for item in files) else None
        cached = self._cache.get(key) if self._cache is not None and key is not None else None
        if cached is not None:
            unpack(cached[0], destination)
            return Installed(roles, collections, cached[1], time.monotonic() - started, key)
        self._run_galaxy(files, destination, roles, collections)
        if self._cache is not None and key is not None:
            for path in (roles, collections):
                if path is not None:
                    path.mkdir(parents=True, exist_ok=True)  # an empty section is cached as such
            self._cache.put(key, pack(destination))
        return Installed(roles, collections, "none", time.monotonic() - started, key)

    def _environment(self, home: Path) -> dict[str, str]:
        temp = home / "tmp"
        temp.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = home / "ansible.cfg"
        config.write_text("", encoding="utf-8")  # no ansible.cfg of the repository or the machine applies
        env = dict(self._git_environment)
        env.update({
            "HOME": str(home), "TMPDIR": str(temp), "ANSIBLE_HOME": str(home / ".ansible"),
            "ANSIBLE_LOCAL_TEMP": str(temp / "ansible"), "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_GALAXY_SERVER": GALAXY_SERVER, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_GALAXY_DISPLAY_PROGRESS": "False",
            # ansible refuses to start without a UTF-8 locale (git's environment has LC_ALL=C).
            "LC_ALL": "C.UTF-8",
            # As the checkout's own git: no redirect may send git (and a password) elsewhere.
            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.followRedirects", "GIT_CONFIG_VALUE_0": "false",
        })
        if self._run_id:
            env["RUNNER_RUN_ID"] = self._run_id  # a kill of the run ends galaxy too
        env.update(self._extra)
        return env

    def _run_galaxy(self, files: list[RequirementsFile], destination: Path, roles: Path | None,
                    collections: Path | None) -> None:
        home = destination.parent / "galaxy-home"
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = self._environment(home)
        for requirements in files:
            if requirements.roles and roles is not None:
                self._galaxy(["role", "install", "-r", str(requirements.path), "-p", str(roles)],
                             requirements.name, env, home)
            if requirements.collections and collections is not None:
                self._galaxy(["collection", "install", "-r", str(requirements.path), "-p", str(collections)],
                             requirements.name, env, home)

    def _galaxy(self, args: list[str], name: str, env: dict[str, str], cwd: Path) -> None:
        command = f"ansible-galaxy {args[0]} install -r {name}"
        try:
            done = subprocess.run(["ansible-galaxy", *args], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=GALAXY_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise GalaxyError(f"{command} took longer than {GALAXY_TIMEOUT_SECONDS} s") from None
        except OSError as exc:
            raise GalaxyError(f"{command} could not start: {exc}") from None
        if done.returncode != 0:
            # Masked whole first: a multi-line secret is still whole here, not yet cut into lines.
            output = self._mask(f"{done.stderr}\n{done.stdout}".strip())
            detail = self._mask(_error_lines(output))[-1000:] or f"exit code {done.returncode}"
            raise GalaxyError(f"{command} failed: {detail}")


def _ansible_version() -> str:
    from ansible.release import __version__

    return __version__
