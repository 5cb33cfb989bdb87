"""README.md's "First run" block, run as written: bash, curl and python3 against local mode.

The block is taken from the README itself (the first ```sh block under "## First run") and run
unchanged in a directory whose `.runner` points at the state directory of the session's local
mode, which is what `make run` leaves in the repository root for a human.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## First run"
RUN_TIMEOUT = 360
# What would send the block elsewhere than a human's shell after `make run` would go.
_FOREIGN_ENV_PREFIXES = ("RUNNER_", "AWS_", "BASH_ENV", "ENV")
_PROXY_ENV = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def first_run_block(markdown: str) -> str:
    """The first ```sh block of the "First run" section (up to the next "## " heading)."""
    start = markdown.find("\n" + HEADING + "\n")
    if start < 0:
        raise AssertionError(f"README.md has no {HEADING!r} heading")
    section = markdown[start + 1:]
    following = re.search(r"^## ", section[len(HEADING):], re.M)
    if following:
        section = section[:len(HEADING) + following.start()]
    block = re.search(r"^```sh\n(.*?)^```$", section, re.M | re.S)
    if block is None:
        raise AssertionError(f"the {HEADING!r} section of README.md has no ```sh block")
    return block.group(1)


def test_the_first_run_block_is_found_and_reads_local_json():
    block = first_run_block(README.read_text(encoding="utf-8"))
    assert ".runner" in block and "local.json" in block
    assert "exampleRepository" in block and "hello.yml" in block
    assert "/start" in block and "/log" in block
    # Plain bash needs every URL with a query string quoted; this block needs none.
    for line in block.splitlines():
        for url in re.findall(r"\S*\$API\S*", line):
            assert not ("?" in url or "&" in url) or url.startswith('"'), line


def human_environment() -> dict[str, str]:
    """This process's environment minus what points local mode or the shell elsewhere."""
    return {name: value for name, value in os.environ.items()
            if not name.startswith(_FOREIGN_ENV_PREFIXES) and name.lower() not in _PROXY_ENV}


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_the_readme_first_run_succeeds_as_written(service, tmp_path):
    block = first_run_block(README.read_text(encoding="utf-8"))
    checkout = tmp_path / "checkout"  # stands for the repository root, after `make run`
    checkout.mkdir()
    (checkout / ".runner").symlink_to(service.state_dir, target_is_directory=True)

    done = subprocess.run(["bash", "-c", block], cwd=checkout, env=human_environment(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    output = done.stdout
    report = f"exit {done.returncode}\n--- stdout\n{output}\n--- stderr\n{done.stderr}"

    assert done.returncode == 0, report
    assert "unexpected answer" not in done.stderr, report
    statuses = re.findall(r"^status (\S+)$", output, re.M)
    assert statuses and statuses[-1] == "SUCCESS", report
    assert "Hello from localhost" in output, report
    assert re.search(r"^===== SUCCESS \(attempt 1\) =====$", output, re.M), report

    # The job is the example repository's hello.yml, as local.json named it.
    job_id = re.search(r"^job (\S+)$", output, re.M).group(1)
    job = service.client("DEMO").get(f"/jobs/DEMO/{job_id}").json()
    assert service.local["exampleRepository"].startswith("file://")
    assert job["repository"]["url"] == service.local["exampleRepository"]
    assert job["repository"]["branch"] == "main" and job["repository"]["defaultPlaybook"] == "hello.yml"


def test_the_example_repository_is_committed_again_only_when_the_examples_change(tmp_path):
    from localmode.examples import EXAMPLES_SOURCE, publish_examples

    source = tmp_path / "playbooks"
    source.mkdir()
    for path in EXAMPLES_SOURCE.iterdir():
        (source / path.name).write_bytes(path.read_bytes())
    state = tmp_path / "state"

    def tip() -> str:
        return subprocess.run(["git", "--git-dir", str(state / "examples.git"), "rev-parse", "refs/heads/main"],
                              capture_output=True, text=True, check=True).stdout.strip()

    url = publish_examples(state, source)
    assert url == (state / "examples.git").resolve().as_uri()
    first = tip()
    assert publish_examples(state, source) == url and tip() == first  # nothing changed: same commit
    (source / "hello.yml").write_text("- hosts: all\n  tasks: []\n", encoding="utf-8")
    publish_examples(state, source)
    assert tip() != first
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "-b", "main", url, str(clone)], check=True, capture_output=True)
    assert sorted(path.name for path in clone.iterdir() if path.name != ".git") == sorted(
        path.name for path in source.iterdir())
    assert (clone / "hello.yml").read_text(encoding="utf-8") == "- hosts: all\n  tasks: []\n"
