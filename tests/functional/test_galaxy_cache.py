"""The Galaxy install cache: /tmp while warm, checked against the worker's memory; S3 for a cold worker."""
from __future__ import annotations

from pathlib import Path

from chalicelib.platform import aws
from chalicelib.platform.config import get_settings
from runner_lambda.galaxy import InstallCache, pack, unpack


def tarball(tmp_path: Path) -> bytes:
    role = tmp_path / "made" / "roles" / "myrole" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text("- debug: msg=hi\n")
    return pack(tmp_path / "made")


def test_a_cold_worker_gets_the_install_from_the_stack_bucket(aws_stack, tmp_path):
    bucket = get_settings().galaxy_cache_bucket
    assert bucket, "local mode and the tests name the template's bucket"
    warm = InstallCache(aws.client("s3"), bucket, directory=tmp_path / "warm")
    data = tarball(tmp_path)
    warm.put("k1", data)
    assert warm.get("k1") == (data, "tmp")
    cold = InstallCache(aws.client("s3"), bucket, directory=tmp_path / "cold")
    assert cold.get("k1") == (data, "s3")
    assert cold.get("k1") == (data, "tmp")  # kept warm from then on
    assert cold.get("missing") is None
    unpack(data, tmp_path / "out")
    assert (tmp_path / "out" / "roles" / "myrole" / "tasks" / "main.yml").read_text() == "- debug: msg=hi\n"


def test_a_tarball_changed_in_tmp_is_never_used(tmp_path):
    cache = InstallCache(directory=tmp_path / "cache")
    cache.put("k1", tarball(tmp_path))
    (tmp_path / "cache" / "k1.tar.gz").write_bytes(b"planted by a playbook")
    assert cache.get("k1") is None
    assert not (tmp_path / "cache" / "k1.tar.gz").exists()


def test_what_tmp_holds_is_sealed_for_this_worker_only(tmp_path):
    # The next run may be another account's playbook, reading /tmp: it finds no role's content.
    cache = InstallCache(directory=tmp_path / "cache")
    data = tarball(tmp_path)
    cache.put("k1", data)
    stored = (tmp_path / "cache" / "k1.tar.gz").read_bytes()
    assert b"debug: msg=hi" not in stored and data not in stored
    assert InstallCache(directory=tmp_path / "cache").get("k1") is None  # another process: no key to open it
    (tmp_path / "cache" / "k2.tar.gz").write_bytes(stored)  # moved under another key: does not open either
    assert cache.get("k1") == (data, "tmp")


def test_between_runs_only_what_the_worker_wrote_stays(tmp_path):
    cache = InstallCache(directory=tmp_path / "cache")
    data = tarball(tmp_path)
    cache.put("k1", data)
    (tmp_path / "cache" / "k2.tar.gz").write_bytes(b"planted")
    (tmp_path / "cache" / "plugins").mkdir()
    cache.prune()
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == ["k1.tar.gz"]
    assert cache.get("k2") is None and cache.get("k1") == (data, "tmp")


def test_the_tmp_cache_evicts_the_least_recently_used(tmp_path):
    data = tarball(tmp_path)
    sealed = len(data) + 28  # nonce and tag
    cache = InstallCache(directory=tmp_path / "cache", max_bytes=2 * sealed + 10)
    cache.put("old", data)
    cache.put("used", data)
    assert cache.get("old")
    cache.put("new", data)
    assert cache.get("used") is None and cache.get("old") and cache.get("new")
