"""The worker: a container-image Lambda fed by the run queue (DESIGN.md section 1)."""
