"""The worker: a container-image Lambda fed by the run queue (docs/architecture.md)."""
