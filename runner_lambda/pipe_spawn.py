"""ansible-runner without a pseudo-terminal.

ansible-runner 2.4 starts playbooks through `pexpect.spawn`, which needs a pty; Lambda has none
("out of pty devices"). Its own subprocess mode is no way out: it blocks until the playbook ends,
so events arrive only at the end and `cancel_callback` is never asked. `PipeSpawn` gives the
runner the part of `pexpect.spawn` it uses, over pipes, so that events stream and stop/kill work
exactly as with a pty. Its reads wait on the output queue instead of polling it.
"""
from __future__ import annotations

import os
import queue
import types

import ansible_runner.runner
import pexpect
from pexpect.popen_spawn import PopenSpawn


class PipeSpawn(PopenSpawn):
    """`pexpect.spawn`'s signature and the calls ansible-runner makes, on pipes."""

    def __init__(self, command: str, args: list[str] | tuple = (), cwd: str | None = None,
                 env: dict | None = None, encoding: str | None = None, codec_errors: str = "strict",
                 **_ignored: object) -> None:
        # A session of its own, as a pty child has: ansible-runner kills the group on cancel.
        super().__init__([command, *args], cwd=cwd, env=env, encoding=encoding,
                         codec_errors=codec_errors, preexec_fn=os.setsid)
        # Nothing ever answers a prompt: a playbook that asks for input gets EOF at once.
        self.proc.stdin.close()

    def read_nonblocking(self, size: int, timeout: float | None) -> str | bytes:
        """Wait up to `timeout` for output (PopenSpawn returns at once and is called in a spin)."""
        if not self._buf and not self._read_reached_eof and timeout and timeout > 0:
            try:
                incoming = self._read_queue.get(timeout=timeout)
            except queue.Empty:
                return self.string_type()
            if incoming is None:
                self._read_reached_eof = True
            else:
                self._buf += self._decoder.decode(incoming, final=False)
        return super().read_nonblocking(size, timeout)

    def isalive(self) -> bool:
        """Whether the playbook process still runs."""
        return self.proc.poll() is None

    def close(self, force: bool = True) -> None:
        """Collect the exit status (the pipes close with the process)."""
        self.wait()
        self.closed = True


_pexpect_without_pty = types.ModuleType("pexpect_without_pty")
_pexpect_without_pty.__dict__.update(vars(pexpect))
_pexpect_without_pty.spawn = PipeSpawn


def use_pipes() -> None:
    """Make ansible-runner start playbooks on pipes rather than a pty (idempotent)."""
    ansible_runner.runner.pexpect = _pexpect_without_pty
