"""One measured run: N calls against a started server, from separate load-generator processes.

Order: the idle server's CPU (3 s) and RSS; the generators start one after another and set their
calls up one at a time; 3 s of warm-up; then the window: CPU of the server's process tree and of the
generators, and every call's arrivals, over `seconds`; RSS at its end, calls still up.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import psutil

from bench.load_servers import ROOT, SERVER_CORE, Server, load_cores

IDLE_S = 3.0
WARM_UP_S = 3.0
CALLS_PER_GENERATOR = 40  # the generators (bench/load_rtp.py) cost ~0.3% of a core per call
MB = 1024 * 1024
FOREIGN_LIMIT_PCT = 5.0


@dataclass
class Figures:
    server: str
    mode: str
    calls: int
    failed: int
    seconds: float
    idle_cpu: float  # % of one core, the server idle
    busy_cpu: float  # % of one core, the server with the calls
    rss_idle_mb: float
    rss_loaded_mb: float
    generator_cpu: float  # % of one core, all generators together
    generators: int
    foreign_server_core: float  # % of core 0 used by anything not this server (others' work on the machine)
    foreign_load_cores: float  # % of one core used on the load cores by anything not the load or this driver
    late: int
    received: int
    expected: int  # frames the 20 ms cadence owed every call over the window
    outbound_lost: int
    inbound_sent: int
    inbound_lost: int
    gap_p50: float
    gap_p99: float
    bytes_per_frame: float
    offer_answer_p50: float
    first_frame_p50: float

    @property
    def cpu_per_call(self) -> float:
        return (self.busy_cpu - self.idle_cpu) / max(self.calls, 1)

    @property
    def rss_per_call_mb(self) -> float:
        return (self.rss_loaded_mb - self.rss_idle_mb) / max(self.calls, 1)

    @property
    def late_pct(self) -> float:
        return 100 * self.late / max(self.received, 1)

    @property
    def shortfall_pct(self) -> float:
        """Frames the cadence owed that never came in the window (a server too slow to keep 50/s)."""
        return 100 * max(0, self.expected - self.received - self.outbound_lost) / max(self.expected, 1)

    @property
    def inbound_lost_pct(self) -> float:
        return 100 * self.inbound_lost / max(self.inbound_sent, 1)

    @property
    def contended(self) -> bool:
        """Other work on the machine took enough CPU to spoil the figures."""
        return self.foreign_server_core > FOREIGN_LIMIT_PCT or self.foreign_load_cores > FOREIGN_LIMIT_PCT

    def holds(self, limit_pct: float) -> bool:
        """Every call up, no more late frames than the limit, and the cadence kept as well."""
        return self.failed == 0 and self.late_pct <= limit_pct and self.shortfall_pct <= limit_pct


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass  # a Postgres helper that came and went: its CPU is not seen, and is small
    return total


def _core_busy(cores: set[int]) -> float:
    """CPU seconds the cores spent running processes, since boot (not interrupts: our own packets' softirq
    time lands there, billed to no process)."""
    per_core = psutil.cpu_times(percpu=True)
    return sum(t.user + t.nice + t.system for i, t in enumerate(per_core) if i in cores)


class Generator:
    def __init__(self, server: Server, calls: int, mode: str) -> None:
        args = [sys.executable, "-m", "bench.load_client", "--url", server.base_url, "--calls", str(calls), "--mode", mode]
        if server.token:
            args += ["--token", server.token]
        if server.pipeline == "voice":
            args.append("--voice")
        # It inherits this driver's load cores; pinned again here, not in a preexec_fn: forking Python
        # code while the cloud fakes' gRPC threads run aborts the child.
        self.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ps = psutil.Process(self.proc.pid)
        self.ps.cpu_affinity(sorted(load_cores()))

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def read(self, kind: str) -> dict[str, object]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a load generator exited (status {self.proc.wait()})")
        message = json.loads(line)
        assert message["type"] == kind, message
        return message

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _split(calls: int) -> list[int]:
    """Calls per generator process: at least two processes, at most CALLS_PER_GENERATOR calls in each."""
    count = max(2 if calls > 1 else 1, math.ceil(calls / CALLS_PER_GENERATOR))
    return [calls // count + (1 if i < calls % count else 0) for i in range(count)]


def measure(server: Server, calls: int, seconds: float, mode: str) -> Figures:
    root = psutil.Process(server.pid)
    time.sleep(1.0)
    tree = server.tree()
    before = _cpu_seconds(tree)
    time.sleep(IDLE_S)
    idle = (_cpu_seconds(tree) - before) / IDLE_S * 100
    rss_idle = root.memory_info().rss / MB
    generators: list[Generator] = []
    try:
        setups: list[dict[str, float]] = []
        failed = 0
        for share in _split(calls):
            generators.append(Generator(server, share, mode))
            ready = generators[-1].read("ready")
            setups += ready["setup"]  # type: ignore[arg-type]
            failed += int(ready["failed"])  # type: ignore[arg-type]
        time.sleep(WARM_UP_S)
        tree = server.tree()  # Postgres may have started backends for the calls
        gen_procs = [g.ps for g in generators]
        driver = [psutil.Process()]
        server_core, other_cores = {SERVER_CORE}, load_cores()
        server_before, gen_before, driver_before = _cpu_seconds(tree), _cpu_seconds(gen_procs), _cpu_seconds(driver)
        core_before, others_before, started = _core_busy(server_core), _core_busy(other_cores), time.monotonic()
        for g in generators:
            g.send("start")
        time.sleep(seconds)
        for g in generators:
            g.send("stop")
        elapsed = time.monotonic() - started
        busy = (_cpu_seconds(tree) - server_before) / elapsed * 100
        gen_cpu = (_cpu_seconds(gen_procs) - gen_before) / elapsed * 100
        driver_cpu = (_cpu_seconds(driver) - driver_before) / elapsed * 100
        foreign_server = (_core_busy(server_core) - core_before) / elapsed * 100 - busy
        foreign_load = (_core_busy(other_cores) - others_before) / elapsed * 100 - gen_cpu - driver_cpu
        rss_loaded = root.memory_info().rss / MB
        stats = [g.read("stats") for g in generators]
    finally:
        for g in generators:
            g.close()
    per_call = [c for s in stats for c in s["calls"]]  # type: ignore[attr-defined]
    gaps = np.fromiter((g for c in per_call for g in c["gaps_ms"]), float)
    received = sum(c["received"] for c in per_call)
    # Frames the cadence owed each call over its own generator's window.
    expected = sum(int(float(s["seconds"]) / 0.02) * len(s["calls"]) for s in stats)  # type: ignore[arg-type]

    def p50(key: str) -> float:
        return float(np.median([s[key] for s in setups])) if setups else math.nan

    return Figures(
        server=server.name, mode=mode, calls=calls - failed, failed=failed, seconds=elapsed,
        idle_cpu=idle, busy_cpu=busy, rss_idle_mb=rss_idle, rss_loaded_mb=rss_loaded,
        generator_cpu=gen_cpu, generators=len(generators),
        foreign_server_core=max(0.0, foreign_server), foreign_load_cores=max(0.0, foreign_load),
        late=sum(c["late"] for c in per_call), received=received, expected=expected,
        outbound_lost=sum(c["outbound_lost"] for c in per_call),
        inbound_sent=sum(c["sent"] for c in per_call), inbound_lost=sum(c["inbound_lost"] for c in per_call),
        gap_p50=float(np.percentile(gaps, 50)) if gaps.size else math.nan,
        gap_p99=float(np.percentile(gaps, 99)) if gaps.size else math.nan,
        bytes_per_frame=sum(c["payload_bytes"] for c in per_call) / max(received, 1),
        offer_answer_p50=p50("offer_answer_ms"), first_frame_p50=p50("first_frame_ms"),
    )  # fmt: skip

