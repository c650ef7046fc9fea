"""Start `run.py` as its own process for a benchmark, on a free port with a throwaway data folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# A benchmark drives many calls from one user and one address: every per-user, per-IP and per-node limit off.
UNLIMITED = {
    "MAX_CALLS_PER_USER": "0",
    "MAX_CALLS": "0",
    "RATE_LIMIT_SESSIONS_PER_MINUTE": "0",
    "RATE_LIMIT_REQUESTS_PER_MINUTE": "0",
}


@contextmanager
def serving(args: list[str], env: dict[str, str], what: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start a server process; yields (base_url, process) once it prints "Serving on <url>", and stops it
    with SIGINT at the end (at once: SIGTERM would let calls still live drain first), killed if it lingers."""
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("Serving on "):
            raise RuntimeError(f"{what} did not start: {line!r}")
        yield line.split()[-1], proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def server_process(**env: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Yields (base_url, process) once the server prints that it serves."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-var-") as var_dir:
        full_env = {**os.environ, "PORT": str(port), "VAR_DIR": var_dir, "DEV_MODE": "1", "LOG_LEVEL": "WARNING", **UNLIMITED, **env}
        with serving([sys.executable, "run.py"], full_env, "server") as started:
            yield started
