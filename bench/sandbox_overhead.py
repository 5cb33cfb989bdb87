"""What the Lambda-faithful sandbox costs per execution: local mode with and without it, side by side.

Two local modes run at once, one with its worker in the sandbox (the default) and one with
RUNNER_SANDBOX=none, each with one worker. The same 1-task playbook runs through both APIs, the
two interleaved run by run, so that the machine's load falls on both alike. The figure is the
median time from the start request to the final status, and the difference of the two medians:
the sandbox's cost per execution (target: at most 0.1 s).

    .venv/bin/python bench/sandbox_overhead.py [--runs 10] [--json]
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402 - after the path it comes from
    Jobs, LocalMode, add_standard_arguments, debug_playbook, file_url, job_spec, log, make_repository, median,
    run_benchmark, scratch_directory, summarize,
)

MODES = {"sandbox": {"RUNNER_SANDBOX": "lambda"}, "none": {"RUNNER_SANDBOX": "none"}}
TARGET_SECONDS = 0.1


def measure(runs: int, startup_timeout: float, run_timeout: float) -> dict:
    """Interleaved runs on both local modes; seconds per execution of each, and their difference."""
    with ExitStack() as stack:
        scratch = stack.enter_context(scratch_directory("runner-bench-sandbox-"))
        url = file_url(make_repository(scratch, {"site.yml": debug_playbook(1)}))
        jobs = {}
        for name, env in MODES.items():
            local = stack.enter_context(LocalMode(startup_timeout, {**env, "RUNNER_LOCAL_WORKERS": "1"}))
            api = Jobs(local.client(), local.account)
            jobs[name] = (api, api.create(job_spec(url, "site.yml", host_vars={"ansible_connection": "local"})))
        seconds: dict[str, list[float]] = {name: [] for name in MODES}
        for index in range(runs + 1):  # the first round warms both up and is not counted
            for name, (api, job_id) in jobs.items():
                began = time.monotonic()
                execution_id = api.start(job_id)
                done = api.wait_final(job_id, execution_id, run_timeout, interval=0.02)
                if done["status"] != "SUCCESS":
                    raise RuntimeError(f"{name}: execution {execution_id} ended {done['status']}")
                if index:
                    seconds[name].append(time.monotonic() - began)
            log(f"round {index} of {runs} done")
    difference = median(seconds["sandbox"]) - median(seconds["none"])
    return {"runs": runs, "seconds": {name: summarize(values).as_dict("s", 3) for name, values in seconds.items()},
            "sandbox_cost_seconds": round(difference, 3),
            "ratio": round(median(seconds["sandbox"]) / median(seconds["none"]), 3),
            "target_seconds": TARGET_SECONDS, "pass": difference <= TARGET_SECONDS}


def show(result: dict) -> None:
    """The figures as text."""
    for name, figures in result["seconds"].items():
        print(f"{name:8s} median {figures['median_s']:.3f} s  p95 {figures['p95_s']:.3f} s  max {figures['max_s']:.3f} s")
    verdict = "PASS" if result["pass"] else "FAIL"
    print(f"sandbox cost per execution: {result['sandbox_cost_seconds']:+.3f} s (ratio {result['ratio']:.3f}); "
          f"target <= {TARGET_SECONDS} s: {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="counted executions on each local mode (default 10)")
    parser.add_argument("--run-timeout", type=float, default=120.0, help="seconds one execution may take")
    add_standard_arguments(parser, startup_timeout=120.0)
    args = parser.parse_args()
    return run_benchmark(lambda: measure(args.runs, args.startup_timeout, args.run_timeout), args.json, show,
                         lambda result: 0 if result["pass"] else 1)


if __name__ == "__main__":
    sys.exit(main())
