"""EVENT_LOOP picks the server's event loop: uvloop by default, asyncio's own on request.

The servers the process-level tests start (node lifecycle, metering across processes, the benchmarks)
run on the default, so they cover the whole server on uvloop; the in-process tests run on asyncio's.
"""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from run import event_loop_factory


def test_uvloop_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENT_LOOP", raising=False)
    factory = event_loop_factory()
    assert factory is uvloop.new_event_loop
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_asyncio_on_request_and_nonsense_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "asyncio")
    assert event_loop_factory() is None
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        assert not isinstance(runner.get_loop(), uvloop.Loop)
    monkeypatch.setenv("EVENT_LOOP", "trio")
    with pytest.raises(SystemExit, match="EVENT_LOOP"):
        event_loop_factory()
