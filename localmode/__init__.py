"""Local mode: the whole service on one machine, on an embedded AWS emulator."""
