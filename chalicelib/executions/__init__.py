"""Executions: the status table, start/restart/stop/kill and their workflows."""
