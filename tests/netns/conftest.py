"""Everything here runs only inside the namespace tests/test_netns_suites.py makes for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.liveavatar_fake import FakeLiveAvatar
from tests.fakes.livekit_fake import FakeLiveKitServer
from tests.netns import inside_netns
from tests.netns.avatar_setup import start_fakes

HERE = Path(__file__).resolve().parent
SKIP_REASON = "runs inside its own network namespace; tests/test_netns_suites.py runs it"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest hook sees the whole session's items, so mark only the ones in this directory.
    if inside_netns():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="module")
async def fakes() -> AsyncIterator[tuple[FakeLiveKitServer, FakeLiveAvatar]]:
    """The fake LiveKit server and the fake LiveAvatar API on the namespace's address, for one test file."""
    livekit, liveavatar = await start_fakes()
    yield livekit, liveavatar
    await liveavatar.close()
    await livekit.aclose()
