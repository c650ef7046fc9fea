"""Run pytest inside a private network namespace, where WebRTC can use a real (non-loopback) address.

Neither aiortc nor libwebrtc gathers loopback candidates, so two peers on one machine with only
`lo` never connect. `unshare -n` gives the run its own namespace: `lo` up, plus a bridge carrying
NETNS_ADDRESS/24 (a dummy interface, or a veth pair where there is no dummy driver, if the kernel
reports the portless bridge without carrier, which would make libwebrtc skip it). Nothing inside can reach, or be reached from, the
host network. Tests that need this live in this package (tests/netns/test_*.py); they skip unless
run inside the namespace, and tests/test_netns_suites.py runs each file there.

(The harness lives in the package's __init__ rather than in tests/netns.py: a module and a package
of the same name cannot both be imported as `tests.netns`.)
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

NETNS_ADDRESS = "10.77.0.1"
NETNS_PREFIX = 24
NETNS_INTERFACE = "lkbr0"
INSIDE_ENV = "NETNS_INSIDE"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Runs as `sh -c BOOTSTRAP sh <command...>` inside the new namespace, then becomes the command.
BOOTSTRAP = f"""
set -e
ip link set lo up
ip link add {NETNS_INTERFACE} type bridge
ip link set {NETNS_INTERFACE} up
if ip link show {NETNS_INTERFACE} | grep -q NO-CARRIER; then
    ip link del {NETNS_INTERFACE}
    if ! ip link add {NETNS_INTERFACE} type dummy 2>/dev/null; then
        ip link add {NETNS_INTERFACE} type veth peer name {NETNS_INTERFACE}p
        ip link set {NETNS_INTERFACE}p up
    fi
    ip link set {NETNS_INTERFACE} up
fi
ip addr add {NETNS_ADDRESS}/{NETNS_PREFIX} dev {NETNS_INTERFACE}
exec "$@"
"""


def inside_netns() -> bool:
    """True in a process the harness started inside its namespace."""
    return os.environ.get(INSIDE_ENV) == "1"


def _netns_command(command: list[str]) -> list[str]:
    return ["unshare", "-n", "--", "sh", "-c", BOOTSTRAP, "sh", *command]


@functools.cache
def netns_unavailable_reason() -> str | None:
    """None when a namespace with the test address can be made here; otherwise why not (cached)."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"network namespace tests need `{tool}`, which is not installed"
    try:
        probe = subprocess.run(
            _netns_command(["ip", "-o", "-4", "addr", "show", "dev", NETNS_INTERFACE]),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run `unshare -n`: {exc}"
    if probe.returncode != 0:
        detail = (probe.stderr or probe.stdout).strip().splitlines()
        return (
            f"`unshare -n` refused here (needs root or user namespaces): {detail[-1] if detail else probe.returncode}"
        )
    if NETNS_ADDRESS not in probe.stdout:
        return f"made a network namespace but could not give it {NETNS_ADDRESS}: {probe.stdout.strip()}"
    return None


def run_pytest_in_netns(
    paths: list[str], extra_env: dict[str, str] | None = None, timeout: float = 240.0
) -> subprocess.CompletedProcess[str]:
    """Run `pytest <paths>` (relative to the repository root) in a fresh namespace; output captured.

    `paths` go to pytest as they are, so they may carry options too (e.g. "-k", "name").
    Stdout and stderr are merged into `stdout`. On timeout the whole process group is killed and
    the output so far is returned with return code -9, so the caller can show what hung.
    """
    # The outer run's PYTEST_* (current test, addopts) describe the outer run, not this one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(extra_env or {})
    env[INSIDE_ENV] = "1"
    basetemp = Path("/tmp") / f"netns-pytest-{uuid.uuid4().hex[:12]}"
    command = _netns_command(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rfEs",  # reasons for failures, errors and skips in the summary
            "-p",
            "no:cacheprovider",
            f"--rootdir={REPO_ROOT}",
            f"--basetemp={basetemp}",
            *paths,
        ]
    )
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # one process group: a timeout takes down everything the run started
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        output += f"\n[netns] killed after {timeout:.0f} s\n"
    finally:
        shutil.rmtree(basetemp, ignore_errors=True)
    return subprocess.CompletedProcess(command, process.returncode, output, "")


def pytest_counts(output: str) -> dict[str, int]:
    """Outcome counts from pytest's last summary line, e.g. {"passed": 5, "skipped": 1}."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error|skipped|deselected)", line)]
    if not lines:
        return {}
    counts: dict[str, int] = {}
    for number, word in re.findall(r"(\d+) ([a-z]+)", lines[-1]):
        word = {"errors": "error", "warnings": "warning"}.get(word, word)
        counts[word] = counts.get(word, 0) + int(number)
    return counts
