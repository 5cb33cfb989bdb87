"""Pipe semaphores: multiprocessing's locks and queues without /dev/shm, as ansible uses them."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from runner_lambda.shm_free.pipe_semaphore import RECURSIVE_MUTEX, SEMAPHORE, PipeSemLock

SHM_FREE = os.path.dirname(sys.modules["runner_lambda.shm_free.pipe_semaphore"].__file__)


def test_a_semaphore_counts_its_tokens():
    semaphore = PipeSemLock(SEMAPHORE, 2, 5, None, True)
    assert semaphore._get_value() == 2
    assert semaphore.acquire() and semaphore.acquire()
    assert semaphore.acquire(block=False) is False
    assert semaphore.acquire(timeout=0.01) is False
    semaphore.release()
    assert semaphore._get_value() == 1


def test_a_lock_released_twice_is_refused():
    lock = PipeSemLock(SEMAPHORE, 1, 1, None, True)
    with lock:
        assert lock._is_zero()
    with pytest.raises(ValueError):
        lock.release()


def test_a_recursive_lock_belongs_to_its_thread():
    lock = PipeSemLock(RECURSIVE_MUTEX, 1, 1, None, True)
    assert lock.acquire() and lock.acquire()
    assert lock._count() == 2 and lock._is_mine()
    lock.release()
    lock.release()
    assert not lock._is_mine()
    with pytest.raises(AssertionError):
        lock.release()


def test_a_forked_child_waits_for_the_token_its_parent_holds():
    lock = PipeSemLock(SEMAPHORE, 1, 1, None, True)
    lock.acquire()
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: blocks until the parent releases, then reports
        lock._after_fork()
        got = lock.acquire(timeout=60)
        os.write(writer, b"1" if got else b"0")
        os._exit(0)
    os.close(writer)
    lock.release()
    assert os.read(reader, 1) == b"1"
    os.waitpid(child, 0)


def test_multiprocessing_queues_work_on_pipe_semaphores_when_sem_open_fails():
    # GIVEN a Python whose POSIX semaphores fail as they do without /dev/shm
    script = textwrap.dedent("""
        import _multiprocessing, multiprocessing
        def broken(*args, **kwargs):
            raise OSError(38, "Function not implemented")
        _multiprocessing.SemLock = broken
        import pipe_semaphore
        assert pipe_semaphore.install()
        # WHEN forked workers send through ansible's kind of queue
        context = multiprocessing.get_context("fork")
        queue = context.SimpleQueue()
        workers = [context.Process(target=queue.put, args=(n,)) for n in range(8)]
        for worker in workers:
            worker.start()
        got = sorted(queue.get() for _ in workers)
        for worker in workers:
            worker.join()
        print(got)
    """)
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": SHM_FREE},
                          capture_output=True, text=True, timeout=120)
    # THEN every message arrives
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(list(range(8)))


def test_a_semaphore_never_holds_more_tokens_than_its_pipe():
    # multiprocessing.Queue() asks for SEM_VALUE_MAX tokens; writing them all would block forever
    semaphore = PipeSemLock(SEMAPHORE, 1 << 30, 1 << 30, None, True)
    assert 0 < semaphore.maxvalue <= 1 << 20
    assert semaphore._get_value() == semaphore.maxvalue
    with pytest.raises(ValueError):
        semaphore.release()
