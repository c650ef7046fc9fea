"""A server process's threads (named), open fds (by kind) and RSS, read from /proc, and how they changed.

Used by bench/lifecycle_cycles.py and tests/test_resource_cycles.py.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# -- the server's figures, from /proc -----------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    threads: int
    fds: int
    rss_kib: int
    thread_names: collections.Counter[str]
    fd_kinds: collections.Counter[str]

    def line(self) -> str:
        return f"threads {self.threads:4d}   fds {self.fds:4d}   rss {self.rss_kib / 1024:7.1f} MiB"


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def python_thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name, from py-spy (if it can attach); pools lose their _N suffix."""
    spy = _py_spy()
    if spy is None:
        return {}
    try:
        out = subprocess.run(
            [spy, "dump", "--pid", str(pid), "--json", "--nonblocking"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        threads = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    return {
        t["os_thread_id"]: re.sub(r"_\d+$", "", t.get("thread_name") or "python-thread")
        for t in threads
        if t.get("os_thread_id")
    }


def thread_names(pid: int) -> collections.Counter[str]:
    """Thread names: /proc's comm, or the Python thread's name where py-spy can tell it.

    Python 3.11 does not name OS threads, so comm says "python" for nearly all of them; threads
    py-spy does not know are native (made by a C/C++ library) and are counted as "native:<comm>".
    """
    python_names = python_thread_names(pid)
    names: collections.Counter[str] = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8", errors="replace") as handle:
                comm = handle.read().strip()
        except FileNotFoundError:  # the thread ended while we looked
            continue
        name = python_names.get(int(tid))
        names[name if name else (f"native:{comm}" if python_names else comm)] += 1
    return names


def figures(pid: int, *, names: bool = False) -> Figures:
    rss_kib = 0
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    return Figures(
        threads=len(os.listdir(f"/proc/{pid}/task")),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        rss_kib=rss_kib,
        thread_names=thread_names(pid) if names else collections.Counter(),
        fd_kinds=fd_kinds(pid) if names else collections.Counter(),
    )


def fd_kinds(pid: int) -> collections.Counter[str]:
    """Open fds by kind: socket, pipe, anon_inode:[eventfd], or the file's path."""
    kinds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kinds[re.sub(r":\[\d+\]$", "", target)] += 1
    return kinds


async def settled_figures(pid: int, *, quiet_s: float = 3.0, timeout_s: float = 30.0) -> Figures:
    """The figures once threads and fds have stayed put for `quiet_s` (idle pools wind down), or at timeout."""
    deadline = time.monotonic() + timeout_s
    last = figures(pid)
    since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = figures(pid)
        if (now.threads, now.fds) != (last.threads, last.fds):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return figures(pid, names=True)


def change(before: float, after: float) -> str:
    delta = after - before
    pct = 100.0 * delta / before if before else float("inf")
    return f"{before:10.1f} -> {after:10.1f}   {delta:+9.1f}  ({pct:+6.1f}%)"


def report(before: Figures, after: Figures, out=sys.stdout) -> None:  # type: ignore[no-untyped-def]
    print(f"{'':8s}{'before':>10s}    {'after':>10s}   {'change':>9s}", file=out)
    print(f"threads {change(before.threads, after.threads)}", file=out)
    print(f"fds     {change(before.fds, after.fds)}", file=out)
    print(f"rss MiB {change(before.rss_kib / 1024, after.rss_kib / 1024)}", file=out)
    grew = {name: after.thread_names[name] - before.thread_names.get(name, 0) for name in after.thread_names}
    grew = {name: n for name, n in grew.items() if n > 0}
    shrank = {name: n - after.thread_names.get(name, 0) for name, n in before.thread_names.items()}
    shrank = {name: n for name, n in shrank.items() if n > 0}
    if grew:
        print("threads that grew: " + ", ".join(f"{name} +{n}" for name, n in sorted(grew.items())), file=out)
    else:
        print("threads that grew: none", file=out)
    if shrank:
        print("threads that went: " + ", ".join(f"{name} -{n}" for name, n in sorted(shrank.items())), file=out)
    print("threads after: " + ", ".join(f"{name} x{n}" for name, n in sorted(after.thread_names.items())), file=out)
    fd_change = {k: after.fd_kinds[k] - before.fd_kinds.get(k, 0) for k in set(after.fd_kinds) | set(before.fd_kinds)}
    fd_change = {k: n for k, n in fd_change.items() if n}
    print("fds that changed: " + (", ".join(f"{k} {n:+d}" for k, n in sorted(fd_change.items())) or "none"), file=out)
