"""Schedules: Unix cron, its translation to EventBridge Scheduler, and the fire trigger."""
