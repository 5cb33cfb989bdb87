"""Ansible's linear strategy, with a graceful stop.

When the file named by RUNNER_STOP_FILE exists, no new task starts: the task now running has
already finished on every host (linear runs a task on all hosts before the next one), the play
ends, no further play starts, and the stats are still reported. Runner's worker creates that file
when an execution is asked to stop.
"""
from __future__ import annotations

import os

from ansible.plugins.strategy.linear import StrategyModule as LinearStrategyModule

DOCUMENTATION = """
    name: runner_linear
    short_description: linear, stopping gracefully when Runner asks
    description:
        - Runs tasks as the linear strategy does; once RUNNER_STOP_FILE exists, starts no new task and ends the playbook.
    author: Runner
"""


def stop_requested() -> bool:
    """Whether the worker asked this run to stop."""
    path = os.environ.get("RUNNER_STOP_FILE")
    return bool(path) and os.path.exists(path)


class StrategyModule(LinearStrategyModule):
    """Linear, with a check for the stop file before every task."""

    def _get_next_task_lockstep(self, hosts, iterator):  # noqa: ANN001, ANN201 - ansible's signature
        if stop_requested():
            return []
        return super()._get_next_task_lockstep(hosts, iterator)

    def run(self, iterator, play_context):  # noqa: ANN001, ANN201 - ansible's signature
        result = super().run(iterator, play_context)
        if stop_requested():
            # The playbook executor ends the playbook on this code, after the stats callback.
            return result | self._tqm.RUN_FAILED_BREAK_PLAY
        return result
