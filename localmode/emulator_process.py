"""The emulator's own process: reads its request on stdin, answers its state, serves until told."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time

from localmode.emulator import EmulatorState, serve_emulator, tune_gc


def main() -> int:
    """Start moto, provision it, print the state as one JSON line, serve until SIGTERM."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    request = json.loads(sys.stdin.readline())
    saved = EmulatorState.from_json(request["state"]) if request.get("state") else None
    parent = os.getppid()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    server, state = serve_emulator(request["port"], request["region"], saved)
    tune_gc()
    sys.stdout.write(json.dumps(state.to_json()) + "\n")
    sys.stdout.flush()
    # Serve until told to stop, or until the parent is gone (never outlive local mode).
    while not stopping and os.getppid() == parent:
        time.sleep(0.5)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
