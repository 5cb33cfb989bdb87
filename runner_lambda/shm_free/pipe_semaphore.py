"""Semaphores for multiprocessing that need no shared memory: a pipe holds one byte per token.

AWS Lambda has no /dev/shm, so POSIX semaphores (sem_open) fail with ENOSYS, and with them every
multiprocessing Lock and Queue; ansible-core then dies with "Unable to use multiprocessing".
ansible forks its workers (the 'fork' start method), so a pipe created before the fork is shared
by every process of the run: acquiring reads a byte, releasing writes one, and the number of bytes
waiting in the pipe (FIONREAD) is the semaphore's value. `install()` puts this class where
`multiprocessing.synchronize` looks for `_multiprocessing.SemLock`, only when sem_open fails.
"""
from __future__ import annotations

import array
import fcntl
import os
import select
import termios
import threading
import time

RECURSIVE_MUTEX, SEMAPHORE = 0, 1
# A semaphore holds at most as many tokens as its pipe holds bytes: 64 KiB by default. Asking
# for bigger pipes would spend the user's pipe budget (pipe-user-pages-soft), past which every
# new pipe of the user gets one page; so the pipe keeps its size, and its capacity is read back.
DEFAULT_PIPE_CAPACITY = 1 << 16
F_GETPIPE_SZ = 1032


class PipeSemLock:
    """The interface of `_multiprocessing.SemLock`, for processes related by fork."""

    SEM_VALUE_MAX = DEFAULT_PIPE_CAPACITY

    def __init__(self, kind: int, value: int, maxvalue: int, name: str | None, unlink: bool) -> None:
        if value < 0 or value > maxvalue:
            raise ValueError("invalid value")
        self.kind = kind
        self.name = None if unlink else name
        self._read, self._write = os.pipe2(os.O_CLOEXEC)
        try:
            capacity = fcntl.fcntl(self._write, F_GETPIPE_SZ)
        except OSError:
            capacity = 4096  # the least a pipe holds
        # Never more tokens than the pipe holds: the initial write fits an empty pipe, so it
        # cannot block, and a release past the capacity is refused as one past maxvalue is.
        self.maxvalue = min(maxvalue, capacity)
        os.set_blocking(self._read, False)
        if value:
            os.write(self._write, b"\0" * min(value, self.maxvalue))
        self.handle = self._read
        self._owner: tuple[int, int] | None = None
        self._depth = 0

    def __del__(self) -> None:
        # Each process closes its own copies; the others' stay open (ansible makes a queue, with
        # three of these, per task: without this a long playbook runs out of descriptors).
        for fd in (getattr(self, "_read", None), getattr(self, "_write", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _me(self) -> tuple[int, int]:
        return os.getpid(), threading.get_ident()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take a token, waiting at most `timeout` seconds (forever if None) when `block`."""
        if self.kind == RECURSIVE_MUTEX and self._depth and self._owner == self._me():
            self._depth += 1
            return True
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                os.read(self._read, 1)
                break
            except BlockingIOError:
                if not block:
                    return False
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            # Another process may take the byte first: read again after every wake-up.
            select.select([self._read], [], [], remaining)
        self._owner, self._depth = self._me(), self._depth + 1
        return True

    def release(self) -> None:
        """Give a token back."""
        if self.kind == RECURSIVE_MUTEX:
            if not self._depth or self._owner != self._me():
                raise AssertionError("attempt to release recursive lock not owned by thread")
            if self._depth > 1:
                self._depth -= 1
                return
        elif self._get_value() >= self.maxvalue:
            raise ValueError("semaphore or lock released too many times")
        self._depth = max(0, self._depth - 1)
        if not self._depth:
            self._owner = None
        os.write(self._write, b"\0")

    def _get_value(self) -> int:
        waiting = array.array("i", [0])
        fcntl.ioctl(self._read, termios.FIONREAD, waiting, True)
        return waiting[0]

    def _is_zero(self) -> bool:
        return self._get_value() == 0

    def _count(self) -> int:
        return self._depth if self._owner == self._me() else 0

    def _is_mine(self) -> bool:
        return self._count() > 0

    def _after_fork(self) -> None:
        self._owner, self._depth = None, 0

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def sem_open_works() -> bool:
    """Whether the platform's POSIX semaphores work here (they need /dev/shm)."""
    import _multiprocessing

    try:
        _multiprocessing.SemLock(SEMAPHORE, 1, 1, f"/runner-probe-{os.getpid()}", True)
    except OSError:
        return False
    return True


def install() -> bool:
    """Use pipe semaphores for multiprocessing where POSIX semaphores fail; True if installed."""
    import _multiprocessing

    if sem_open_works():
        return False
    _multiprocessing.SemLock = PipeSemLock
    return True
