"""``make ui``: the Dagster UI, daemon and code server of this machine (``dagster dev``),
stopped within seconds by SIGTERM or Ctrl-C.

``dagster dev`` runs in a session of its own; this process waits for it and, on SIGTERM or
SIGINT (whatever disposition it inherited), sends SIGTERM to every process of that session
at once — webserver, daemon, code server, run workers — and SIGKILL to what is left after
``MUP_UI_STOP_TIMEOUT`` seconds (default 10). Arguments are passed to ``dagster dev``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from mup_dagster.stack import session_entry, stop_processes


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cmd = [str(Path(sys.executable).with_name("dagster")), "dev", *args]
    stop = threading.Event()
    received: list[str] = []

    def _stop(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    proc = subprocess.Popen(cmd, start_new_session=True)
    entry = session_entry("dagster dev", proc, cmd)
    while proc.poll() is None and not stop.wait(0.5):
        pass
    if proc.poll() is None:
        print(f"mup ui: {received[0]}: stopping the webserver, daemon and code server", file=sys.stderr, flush=True)
        stop_processes([entry], timeout=float(os.environ.get("MUP_UI_STOP_TIMEOUT", "10")))
        return 0
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
