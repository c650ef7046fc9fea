"""Runs each tests/netns/test_*.py file in its own network namespace (see tests/netns/__init__.py).

One outer test per inner file, so a failure names the file and shows that run's whole output. The
inner run must pass and skip nothing: a skip in there means the namespace did not give the tests what
they need. Where namespaces cannot be made this skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser import require_chromium
from tests.netns import REPO_ROOT, netns_unavailable_reason, pytest_counts, run_pytest_in_netns

INNER_FILES = sorted(str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "tests" / "netns").glob("test_*.py"))
# Files whose test count is known: fewer passing means tests went missing, not that all is well.
MIN_PASSED = {
    "tests/netns/test_livekit_fake.py": 9,
    "tests/netns/test_avatar_relay.py": 2,
    "tests/netns/test_avatar_exits.py": 11,
    "tests/netns/test_avatar_sessions_api.py": 3,
    "tests/netns/test_avatar_browser.py": 1,
}

NEEDS_CHROMIUM = {"tests/netns/test_avatar_browser.py"}


@pytest.mark.timeout(280)
@pytest.mark.parametrize("path", INNER_FILES, ids=[Path(path).stem for path in INNER_FILES])
def test_netns_suite(path: str) -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the network namespace tests cannot run: {reason}")
        pytest.skip(reason)
    if path in NEEDS_CHROMIUM:
        require_chromium()  # skips with its reason where Chromium is absent (fails under CI=true)
    result = run_pytest_in_netns([path], timeout=240)
    exit_code, counts = result.returncode, pytest_counts(result.stdout)
    shown = f"inner pytest for {path} (exit {exit_code}):\n{result.stdout}"
    assert exit_code == 0, shown
    assert counts.get("passed", 0) >= MIN_PASSED.get(path, 1), shown
    assert counts.get("skipped", 0) == 0, shown
