"""The inside of a local worker's sandbox: PID 1 of a new PID and mount namespace, as root.

`python -m localmode.sandbox_init PLAN -- COMMAND...` builds the Lambda-like root, enters it,
becomes the sandbox user, and execs COMMAND, which then is PID 1: when it exits, the kernel ends
every process left in the sandbox, as Lambda discards an environment.

The new root is the host's root bound read-only, with:
- /tmp: a tmpfs of its own (the plan's size), the only writable place; what the worker needs of
  the host's /tmp (a checkout there, its .venv) is bound into it read-only;
- /dev: a read-only tmpfs holding null, zero, full, random and urandom only (no shm, pts, ptmx);
- /proc: this PID namespace's own, so no process outside is visible;
- /var: a read-only tmpfs with task/ (the assembled function code), runtime/ (local mode's
  stand-in for the Lambda runtime) and the host's other /var entries bound read-only;
- /etc/passwd and /etc/group with Lambda's user added, as the worker image has them;
- directories the sandbox user could not traverse on the way to Python (e.g. /root) replaced by
  empty read-only tmpfs holding only that path.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from localmode.sandbox import RUNTIME_ROOT, TASK_ROOT, SandboxPlan

STAGING = Path("/mnt")  # a tmpfs mounted here, in this mount namespace only
DEVICES = ("null", "zero", "full", "random", "urandom")
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1


def mount(*args: str) -> None:
    """util-linux mount, failing loudly."""
    subprocess.run(["mount", *args], check=True)


def mounts_below(root: Path) -> list[str]:
    """Mount points at or below `root`, shallowest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(str(root) + "/"):
            points.append(point)
    return sorted(set(points), key=lambda point: point.count("/"))


def read_only_root(root: Path) -> None:
    """Bind the host's root at `root`, every mount in it read-only and without setuid."""
    root.mkdir()
    mount("--rbind", "/", str(root))
    mount("--make-rslave", str(root))
    for point in mounts_below(root):
        subprocess.run(["mount", "-o", "remount,bind,ro,nosuid", point], check=False,
                       stderr=subprocess.DEVNULL)
    # The copy of the staging tmpfs inside the new root is ours, not the host's /mnt.
    subprocess.run(["umount", "-l", str(root / STAGING.relative_to("/"))], check=False)


def tmpfs(point: Path, options: str) -> None:
    """A tmpfs at `point`."""
    mount("-t", "tmpfs", "-o", options, "tmpfs", str(point))


def bind(source: Path, target: Path) -> None:
    """Bind `source` on `target` read-only (creating the target)."""
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    mount("--rbind", str(source), str(target))
    mount("-o", "remount,bind,ro,nosuid", str(target))


def devices(root: Path) -> None:
    """A /dev with only Lambda's five devices."""
    dev = root / "dev"
    tmpfs(dev, "mode=755,nosuid,noexec")
    for name in DEVICES:
        (dev / name).touch()
        mount("--bind", f"/dev/{name}", str(dev / name))
    mount("-o", "remount,ro,mode=755,nosuid,noexec", str(dev))


def var(root: Path, plan: SandboxPlan) -> None:
    """/var: the task and runtime roots, beside the host's /var entries, all read-only."""
    target = root / "var"
    tmpfs(target, "mode=755,nosuid")
    for entry in sorted(Path("/var").iterdir()):
        if entry.name not in ("task", "runtime") and not entry.is_symlink():
            bind(entry, target / entry.name)
        elif entry.is_symlink():
            (target / entry.name).symlink_to(os.readlink(entry))
    bind(Path(plan.task_source), root / TASK_ROOT.lstrip("/"))
    bind(Path(plan.runtime_source), root / RUNTIME_ROOT.lstrip("/"))
    mount("-o", "remount,ro,mode=755,nosuid", str(target))


def identity(root: Path, plan: SandboxPlan) -> None:
    """/etc/passwd and /etc/group knowing the sandbox user, as the image's do."""
    for name, line in (("passwd", plan.passwd_line), ("group", f"sbx_user1051:x:{plan.gid}:")):
        written = STAGING / f"etc-{name}"
        written.write_text(Path(f"/etc/{name}").read_text() .rstrip("\n") + "\n" + line + "\n")
        written.chmod(0o644)
        mount("--bind", str(written), str(root / "etc" / name))
        mount("-o", "remount,bind,ro", str(root / "etc" / name))


def under_tmp(root: Path, paths: list[str]) -> None:
    """Paths the worker needs that lie in the host's /tmp (a checkout there, its .venv): bound
    read-only at the same place in the sandbox's own /tmp, below directories of root's."""
    for wanted in map(Path, paths):
        if Path("/tmp") in wanted.parents and wanted.exists():
            bind(wanted, root / wanted.relative_to("/"))


def keep_reachable(root: Path, paths: list[str]) -> None:
    """Let the sandbox user reach `paths` through directories it may not traverse (e.g. /root)."""
    covered: set[Path] = set()
    for wanted in map(Path, paths):
        for ancestor in reversed(wanted.parents):
            if ancestor == Path("/") or ancestor in covered:
                continue
            if os.stat(ancestor).st_mode & 0o001:
                continue
            # An empty tmpfs hides whatever else the directory holds; only `wanted` comes back.
            tmpfs(root / ancestor.relative_to("/"), "mode=755,nosuid")
            covered.add(ancestor)
            break
    for wanted in map(Path, paths):
        if any(hidden in wanted.parents for hidden in covered):
            bind(wanted, root / wanted.relative_to("/"))
    for hidden in covered:
        mount("-o", "remount,ro,mode=755,nosuid", str(root / hidden.relative_to("/")))


def enter(root: Path, plan: SandboxPlan) -> None:
    """chroot into the new root and become the sandbox user for good."""
    os.chroot(root)
    os.chdir(TASK_ROOT)
    os.setgroups([])
    os.setresgid(plan.gid, plan.gid, plan.gid)
    os.setresuid(plan.uid, plan.uid, plan.uid)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    # A change of user clears the parent-death signal unshare --kill-child set: set it again, so
    # that the sandbox still ends with its unshare (which ends with local mode).
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def build(plan: SandboxPlan) -> None:
    """Make the sandbox's root and enter it."""
    tmpfs(STAGING, "mode=700")
    root = STAGING / "root"
    read_only_root(root)
    tmpfs(root / "tmp", f"size={plan.tmp_mb}m,mode=1777,nosuid,nodev")
    under_tmp(root, plan.reachable)
    devices(root)
    mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(root / "proc"))
    var(root, plan)
    identity(root, plan)
    keep_reachable(root, plan.reachable)
    enter(root, plan)


def main(argv: list[str]) -> int:
    """Build the sandbox and exec the command after `--`."""
    plan_text, separator, *command = argv
    if separator != "--" or not command:
        print("usage: python -m localmode.sandbox_init PLAN -- COMMAND...", file=sys.stderr)
        return 2
    build(SandboxPlan.from_json(plan_text))
    os.execvp(command[0], command)
    return 127  # execvp returns only by raising


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
