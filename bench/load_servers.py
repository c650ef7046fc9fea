"""The servers bench/load.py compares, each started as its own process tree pinned to one core.

ours: run.py (PIPELINE=loopback, or voice on the cloud fakes; DEV_MODE=1, limits off), with the
embedded Postgres it starts.
aiortc: bench/aiortc_echo_server.py under this venv. pipecat: bench/pipecat_echo_server.py under
Pipecat's own venv (PIPECAT_PYTHON, default /tmp/pipecat-venv/bin/python).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from bench.server_process import free_port, server_process, serving
from signaling.auth import TokenAuthority
from storage.usage import USAGE_TYPES

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
PIPECAT_PYTHON = Path(os.environ.get("PIPECAT_PYTHON", "/tmp/pipecat-venv/bin/python"))
SERVERS = ("ours", "aiortc", "pipecat")


def load_cores() -> set[int]:
    """Every core but the server's: the load generators and this driver run there."""
    cores = set(range(os.cpu_count() or 1)) - {SERVER_CORE}
    if not cores:
        raise SystemExit("bench/load.py needs two cores: one for the server, one for the load")
    return cores


@dataclass
class Server:
    name: str
    base_url: str
    pid: int
    token: str = ""
    pipeline: str = "loopback"

    def tree(self) -> list[psutil.Process]:
        """The server, every process under it, and ours' embedded Postgres, as they are now.

        The embedded Postgres daemonizes (its parent becomes init), so it is found by the PORT its
        environment inherited from the server; its backends are its children.
        """
        root = psutil.Process(self.pid)
        procs = [root, *root.children(recursive=True)]
        port = self.base_url.rsplit(":", 1)[-1]
        for proc in psutil.process_iter(["name"]):
            try:
                if proc.info["name"] == "postgres" and proc.ppid() == 1 and proc.environ().get("PORT") == port:
                    procs += [proc, *proc.children(recursive=True)]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return procs

    def pin(self) -> None:
        for proc in self.tree():
            proc.cpu_affinity([SERVER_CORE])


def skip_reason(name: str) -> str | None:
    """Why a server cannot run here, or None."""
    if name == "pipecat" and not PIPECAT_PYTHON.exists():
        return (
            f"no Pipecat venv at {PIPECAT_PYTHON}: python3.11 -m venv /tmp/pipecat-venv && "
            "/tmp/pipecat-venv/bin/pip install 'pipecat-ai[webrtc]' (or set PIPECAT_PYTHON)"
        )
    return None


@contextmanager
def _script_server(python: Path | str, script: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    env = {**os.environ, "LOGURU_LEVEL": "WARNING"}  # Pipecat logs at DEBUG from its import on
    args = [str(python), str(ROOT / "bench" / script), "--port", str(free_port())]
    with serving(args, env, script) as started:
        yield started


LOAD_USER = "bench-load"
# Every call of a run is this one user's: the free plan's hour of microphone audio would run out at about
# 120 calls of 30 s. A limit no run reaches, not none: an unlimited type is not guarded, and the quota
# reservations (Postgres round trips every few seconds a call) must stay in what is measured.
_BENCH_LIMIT = 10**9


async def _load_user_token(base_url: str, jwt_secret: str) -> str:
    """The load user's token, once an admin has raised every monthly limit of theirs out of reach."""
    admin = TokenAuthority(jwt_secret).issue("bench-admin", admin=True)
    async with aiohttp.ClientSession() as http:
        limits = {"limits": dict.fromkeys(USAGE_TYPES, _BENCH_LIMIT)}
        headers = {"Authorization": f"Bearer {admin}"}
        async with http.put(f"{base_url}/api/v1/admin/users/{LOAD_USER}/quota", json=limits, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"raising the load user's limits: {resp.status} {await resp.text()}")
        async with http.post(f"{base_url}/dev/token", json={"user_id": LOAD_USER}) as resp:
            return str((await resp.json())["access_token"])


@contextmanager
def started(name: str, pipeline: str = "loopback") -> Iterator[Server]:
    """Start one server on the server core (children inherit the affinity at fork) and yield it.

    pipeline "voice" (ours only): the voice loop with the cloud engines pointed at local fakes, which
    run in a thread of this driver, on the load cores.
    """
    with ExitStack() as stack:
        env: dict[str, str] = {}
        if pipeline == "voice":
            if name != "ours":
                raise ValueError("only our server has a voice pipeline")
            # grpc and Google's packages, imported only when asked for
            from bench.cloud_fakes import cloud_fakes

            # The agent fake echoes what it heard ("You said: kilo lima"): spoken at 0.35 s a character,
            # about 7 s of answer to each question of bench/load_audio.py's speaking mode.
            env = stack.enter_context(cloud_fakes(reply_seconds_per_char=0.35))  # before pinning: its thread stays on the load cores
        os.sched_setaffinity(0, {SERVER_CORE})
        try:
            jwt_secret = secrets.token_hex(32)
            if name == "ours":
                context = server_process(PIPELINE=pipeline, JWT_SECRET=jwt_secret, **env)
            elif name == "aiortc":
                context = _script_server(sys.executable, "aiortc_echo_server.py")
            elif name == "pipecat":
                context = _script_server(PIPECAT_PYTHON, "pipecat_echo_server.py")
            else:
                raise ValueError(f"unknown server {name!r}")
            base_url, proc = stack.enter_context(context)
        finally:
            os.sched_setaffinity(0, load_cores())
        server = Server(name, base_url, proc.pid, pipeline=pipeline)
        server.pin()
        if name == "ours":
            server.token = asyncio.run(_load_user_token(base_url, jwt_secret))
        yield server
