"""Temporary directories the sandboxed workers can read.

Local workers run in a Lambda-faithful sandbox: its /tmp is a tmpfs of its own and it runs as a
non-root user. So the repositories tests hand to it as file:// URLs live outside /tmp (the rest
of the machine is visible read-only inside), in directories that user may traverse and read.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

RUNS = Path("/var/tmp") / f"runner-tests-{os.getuid()}"
KEEP_SECONDS = 24 * 3600


def pytest_configure(config: pytest.Config) -> None:
    """Give this run a base directory of its own under /var/tmp, unless told otherwise."""
    if config.option.basetemp is not None or hasattr(config, "workerinput"):
        return  # xdist's workers get a subdirectory of the controller's base
    RUNS.mkdir(mode=0o755, exist_ok=True)
    RUNS.chmod(0o755)
    for old in RUNS.glob("run-*"):
        if old.stat().st_mtime < time.time() - KEEP_SECONDS:
            shutil.rmtree(old, ignore_errors=True)
    config.option.basetemp = str(RUNS / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")


def _open(path: Path) -> Path:
    """Make `path` and its parents up to the runs' directory readable and traversable by all."""
    for directory in [path, *path.parents]:
        if directory == RUNS or directory == Path("/"):
            break
        directory.chmod(directory.stat().st_mode | 0o755)
    return path


class ReadableTempPathFactory:
    """pytest's TempPathFactory whose directories the sandbox user can read (pytest makes 0700)."""

    def __init__(self, inner: pytest.TempPathFactory) -> None:
        self._inner = inner

    def mktemp(self, basename: str, numbered: bool = True) -> Path:
        """A new directory below the base, open to read."""
        return _open(self._inner.mktemp(basename, numbered))

    def getbasetemp(self) -> Path:
        """The base directory, open to read."""
        return _open(self._inner.getbasetemp())

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


@pytest.fixture(scope="session")
def tmp_path_factory(tmp_path_factory: pytest.TempPathFactory) -> ReadableTempPathFactory:
    """The built-in factory, with directories the sandboxed workers can read."""
    return ReadableTempPathFactory(tmp_path_factory)
