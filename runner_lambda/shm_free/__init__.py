"""A directory put on PYTHONPATH of ansible's processes (not imported as a package by the worker)."""
