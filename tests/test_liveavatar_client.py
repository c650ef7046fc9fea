"""The LiveAvatar LITE client (agent_bridge.liveavatar) against its fake, over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psutil
import pytest

from agent_bridge.interfaces import EngineError
from agent_bridge.liveavatar import (
    LiveAvatarAuthError,
    LiveAvatarEngine,
    LiveAvatarRealtime,
    LiveAvatarRequestError,
    LiveAvatarServiceError,
    LiveAvatarSession,
    LiveAvatarSettings,
    LiveAvatarStateError,
    RealtimeState,
    SessionState,
    stop_orphan,
)
from agent_bridge.liveavatar.events import (
    AgentStateUpdated,
    BufferAck,
    ServiceError,
    ServiceWarning,
    SocketClosed,
    SpeakEnded,
    SpeakInterrupted,
    SpeakStarted,
    StateUpdated,
    Unknown,
    parse_event,
)
from agent_bridge.liveavatar.rest import service_reason
from agent_bridge.liveavatar.settings import DEFAULT_AVATAR_ID
from tests.fakes.liveavatar_fake import DEFAULT_API_KEY, FakeLiveAvatar

SECOND = 48_000  # bytes of PCM16 mono at 24 kHz


def pcm(seconds: float, seed: int = 1) -> bytes:
    """Distinct, non-silent audio so reordering or loss shows in comparisons."""
    count = int(seconds * 24_000)
    return bytes((seed * 7 + i * 13) % 256 for i in range(count * 2))


def settings_for(fake: FakeLiveAvatar, **overrides: Any) -> LiveAvatarSettings:
    values: dict[str, Any] = {"api_key": DEFAULT_API_KEY, "api_url": fake.api_url, "stop_timeout_s": 2.0}
    values.update(overrides)
    return LiveAvatarSettings(**values)


@pytest.fixture
async def fake() -> AsyncIterator[FakeLiveAvatar]:
    service = FakeLiveAvatar(playback_speed=10.0)
    await service.start()
    yield service
    await service.close()


@pytest.fixture
async def engine(fake: FakeLiveAvatar) -> AsyncIterator[LiveAvatarEngine]:
    eng = LiveAvatarEngine(settings_for(fake))
    yield eng
    await eng.aclose()


class Recorder:
    """A session's on_event: (wire name, frame) pairs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, data: dict[str, Any]) -> None:
        self.events.append((name, data))

    def of(self, name: str) -> list[dict[str, Any]]:
        return [data for n, data in self.events if n == name]

    def ids(self, name: str) -> list[str | None]:
        """The utterance ids of speak events, read as parse_event reads them."""
        return [parse_event(json.dumps(data)).event_id for data in self.of(name)]  # type: ignore[union-attr]

    async def wait(self, name: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.of(name)) < count:
                await asyncio.sleep(0.01)
        return self.of(name)


async def connected_session(engine: LiveAvatarEngine, **kwargs: Any) -> tuple[LiveAvatarSession, Recorder]:
    recorder = Recorder()
    session = engine.open_session(on_event=recorder, **kwargs)
    await session.create()
    await session.start()
    await session.open_realtime()
    assert await session.wait_connected(5)
    return session, recorder


# -- settings ----------------------------------------------------------------------------------------


def test_settings_from_env() -> None:
    with pytest.raises(ValueError, match="LIVEAVATAR_API_KEY"):
        LiveAvatarSettings.from_env({})
    settings = LiveAvatarSettings.from_env({"LIVEAVATAR_API_KEY": "k-secret"})
    assert settings.api_url == "https://api.liveavatar.com"
    assert settings.avatar_id == DEFAULT_AVATAR_ID
    assert settings.keep_alive_interval_s == 60
    assert "k-secret" not in repr(settings)
    custom = LiveAvatarSettings.from_env({
        "LIVEAVATAR_API_KEY": "k", "LIVEAVATAR_API_URL": "http://127.0.0.1:9/", "LIVEAVATAR_AVATAR_ID": "",
        "LIVEAVATAR_QUALITY": "Medium", "LIVEAVATAR_SANDBOX": "true", "LIVEAVATAR_MAX_SESSION_SECONDS": "600",
    })
    assert (custom.api_url, custom.avatar_id) == ("http://127.0.0.1:9", None)
    assert (custom.quality, custom.sandbox) == ("medium", True)
    assert custom.max_session_duration_s == 600
    with pytest.raises(ValueError, match="LIVEAVATAR_QUALITY"):
        LiveAvatarSettings.from_env({"LIVEAVATAR_API_KEY": "k", "LIVEAVATAR_QUALITY": "ultra"})
    engine = LiveAvatarEngine(custom)
    with pytest.raises(ValueError, match="avatar"):
        engine.open_session()


# -- REST ------------------------------------------------------------------------------------------------


async def test_rest_shapes_and_headers(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    rest = engine.rest
    token = await rest.create_token("avatar-1", quality="medium")
    path, headers, body = fake.requests[-1]
    assert path == "/v1/sessions/token"
    assert headers["X-API-KEY"] == DEFAULT_API_KEY and "Authorization" not in headers
    assert body == {"mode": "LITE", "avatar_id": "avatar-1", "video_settings": {"quality": "medium"}}
    assert token.session_id in fake.sessions and token.session_token not in repr(token)

    started = await rest.start(token.session_token)
    path, headers, _ = fake.requests[-1]
    assert path == "/v1/sessions/start"
    assert headers["Authorization"] == f"Bearer {token.session_token}" and "X-API-KEY" not in headers
    assert started.session_id == token.session_id
    assert started.ws_url.startswith("ws://") and started.max_session_duration_s == 1200
    assert started.livekit_url and started.livekit_client_token and started.livekit_agent_token
    assert started.livekit_client_token not in repr(started) and started.ws_url not in repr(started)
    assert fake.sessions[token.session_id].state == "started"

    await rest.keep_alive(token.session_id, token.session_token)
    path, headers, body = fake.requests[-1]
    assert (path, body) == ("/v1/sessions/keep-alive", {"session_id": token.session_id})
    assert headers["Authorization"] == f"Bearer {token.session_token}"

    await rest.stop(token.session_id, token.session_token, "USER_DISCONNECTED")
    path, headers, body = fake.requests[-1]
    assert (path, body) == ("/v1/sessions/stop", {"session_id": token.session_id, "reason": "USER_DISCONNECTED"})
    assert fake.sessions[token.session_id].stop_reason == "USER_DISCONNECTED"


async def test_token_answer_without_envelope(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    fake.bare_token_response = True  # the quickstart's shape
    token = await engine.rest.create_token("avatar-1")
    assert token.session_id in fake.sessions


async def test_auth_and_service_failures_are_distinct(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    rest = engine.rest
    fake.fail_next("token", status=401)
    with pytest.raises(LiveAvatarAuthError) as refused:
        await rest.create_token("avatar-1")
    assert (refused.value.status, refused.value.code, refused.value.retryable) == (401, 4001, False)
    assert isinstance(refused.value, EngineError) and refused.value.engine == "liveavatar"

    token = await rest.create_token("avatar-1")
    fake.fail_next("start", status=500)
    with pytest.raises(LiveAvatarServiceError) as failing:
        await rest.start(token.session_token)
    assert (failing.value.status, failing.value.code, failing.value.retryable) == (500, 5000, True)
    assert not isinstance(failing.value, LiveAvatarAuthError)

    wrong_key = LiveAvatarEngine(settings_for(fake, api_key="not-the-key"))
    try:
        with pytest.raises(LiveAvatarAuthError) as bad_key:
            await wrong_key.rest.create_token("avatar-1")
        assert "not-the-key" not in str(bad_key.value) and bad_key.value.status == 401
    finally:
        await wrong_key.aclose()
    with pytest.raises(LiveAvatarAuthError) as bad_token:
        await rest.start("forged-token")
    assert bad_token.value.status == 401 and "forged-token" not in str(bad_token.value)
    fake.fail_next("token", status=422)
    with pytest.raises(LiveAvatarRequestError) as invalid:
        await rest.create_token("avatar-1")
    assert invalid.value.status == 422 and invalid.value.code == 4000


async def test_unreachable_service_is_a_service_error() -> None:
    with socket_closed_port() as port:
        engine = LiveAvatarEngine(LiveAvatarSettings(api_key="k", api_url=f"http://127.0.0.1:{port}"))
        try:
            with pytest.raises(LiveAvatarServiceError) as failed:
                await engine.rest.create_token("avatar-1")
            assert failed.value.status is None and failed.value.retryable
        finally:
            await engine.aclose()


class socket_closed_port:
    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        return None


# -- realtime --------------------------------------------------------------------------------------


async def test_speak_frames_and_utterances(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    session, events = await connected_session(engine)
    sid = session.session_id
    assert sid is not None
    first = pcm(2.5, seed=1)
    event_id = await session.speak(first)
    assert await session.speak(b"") == event_id  # same utterance until speak_end
    assert await session.speak_end() == event_id
    frames = await fake.wait_for("speak", 3)
    assert [len(f["audio"]) for f in frames] == [SECOND, SECOND, SECOND // 2]  # ~1 s each
    assert {f["event_id"] for f in frames} == {event_id} and not any(f["dropped"] for f in frames)
    assert fake.spoken(sid)[event_id] == first
    await events.wait("agent.speak_ended")
    assert events.ids("agent.speak_started") == [event_id] and events.ids("agent.speak_ended") == [event_id]

    second = await session.speak(pcm(0.3, seed=2))
    assert second != event_id
    await session.speak_end()
    await events.wait("agent.speak_ended", 2)
    assert fake.spoken(sid)[second] == pcm(0.3, seed=2)
    assert await session.speak_end() is None  # nothing to end: nothing sent
    assert len(fake.calls_of("speak_end")) == 2
    assert not fake.calls_of("oversize")
    await session.stop()


async def test_odd_bytes_and_large_chunks_stay_within_limits(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    rest = engine.rest
    token = await rest.create_token("avatar-1")
    started = await rest.start(token.session_token)
    assert engine._http is not None
    realtime = LiveAvatarRealtime(engine._http, started.ws_url, chunk_ms=10_000)
    await realtime.connect()
    seen: list[Any] = []

    async def read_events() -> None:
        async for event in realtime.events():
            seen.append(event)

    reader = asyncio.create_task(read_events())
    assert await realtime.wait_ready(5)
    audio = pcm(12.0)
    event_id = await realtime.speak(audio[:1001])  # an odd length: the last byte waits for its pair
    await realtime.speak(audio[1001:])
    await realtime.speak_end()
    frames = await fake.wait_for("speak_end")
    sizes = [len(f["audio"]) for f in fake.calls_of("speak")]
    assert all(size % 2 == 0 for size in sizes) and max(sizes) == 10 * SECOND
    assert fake.spoken(token.session_id)[event_id] == audio and frames and not fake.calls_of("oversize")
    await realtime.aclose()
    await realtime.aclose()  # idempotent
    assert realtime.state is RealtimeState.CLOSED
    await asyncio.wait_for(reader, 2)  # the typed events end with the socket
    assert seen[:2] == [StateUpdated("connecting"), StateUpdated("connected")]
    assert SpeakStarted(event_id) in seen and isinstance(seen[-1], SocketClosed) and seen[-1].expected
    with pytest.raises(LiveAvatarStateError):
        await realtime.speak(b"\0\0")
    await rest.stop(token.session_id, token.session_token)


async def test_audio_before_connected_is_held_then_delivered(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    fake.auto_connect = False
    recorder = Recorder()
    session = engine.open_session(on_event=recorder)
    await session.create()
    await session.start()
    await session.open_realtime()
    assert session.realtime is not None and session.realtime.state is RealtimeState.OPEN
    audio = pcm(1.5, seed=3)
    event_id = await session.speak(audio)
    await session.speak_end()
    await asyncio.sleep(0.1)
    assert fake.calls_of("speak") == []  # nothing went out: the service would have dropped it
    assert session.realtime.pending_audio_s == pytest.approx(1.5)
    assert session.session_id is not None
    await fake.set_connected(session.session_id)
    await fake.wait_for("speak_end")
    assert fake.spoken(session.session_id) == {event_id: audio}
    assert fake.sessions[session.session_id].dropped == []
    assert session.realtime.pending_audio_s == 0
    await recorder.wait("agent.speak_ended")
    assert [e["state"] for e in recorder.of("session.state_updated")] == ["connecting", "connected"]
    await session.stop()


async def test_held_audio_is_bounded(fake: FakeLiveAvatar) -> None:
    fake.auto_connect = False
    engine = LiveAvatarEngine(settings_for(fake, max_pending_audio_s=1.0))
    try:
        session = engine.open_session()
        await session.create()
        await session.start()
        await session.open_realtime()
        await session.speak(pcm(0.8))
        with pytest.raises(LiveAvatarStateError, match="not connected"):
            await session.speak(pcm(0.5))
        assert await session.interrupt() is None  # nothing reached the service: the held audio is dropped
        assert session.realtime is not None and session.realtime.pending_audio_s == 0
        await session.speak(pcm(0.8))  # room again
    finally:
        await engine.aclose()


async def test_fake_drops_commands_sent_before_connected(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    fake.auto_connect = False
    token = await engine.rest.create_token("avatar-1")
    started = await engine.rest.start(token.session_token)
    async with aiohttp.ClientSession() as http, http.ws_connect(started.ws_url) as ws:
        audio = base64.b64encode(pcm(0.1)).decode()
        await ws.send_str(json.dumps({"type": "agent.speak", "event_id": "e1", "audio": audio}))
        await fake.wait_for("speak")
        assert fake.calls_of("speak")[0]["dropped"] is True
        assert fake.sessions[token.session_id].dropped[0][:2] == ("agent.speak", "e1")
        assert fake.spoken(token.session_id) == {}
    await engine.rest.stop(token.session_id, token.session_token)


async def test_interrupt_then_a_new_utterance(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    session, events = await connected_session(engine)
    first = await session.speak(pcm(3.0))
    await events.wait("agent.speak_started")
    interrupt_id = await session.interrupt()
    assert interrupt_id is not None and interrupt_id != first
    await events.wait("agent.speak_interrupted")
    assert events.ids("agent.speak_interrupted") == [first]
    acks = await events.wait("agent.audio_buffer_cleared")
    assert acks[0]["source_event_id"] == interrupt_id
    assert fake.calls_of("interrupt")[0]["event_id"] == interrupt_id
    second = await session.speak(pcm(0.2))
    assert second not in (first, interrupt_id)
    await session.speak_end()
    await events.wait("agent.speak_ended")
    assert events.ids("agent.speak_ended") == [second]  # the first never ends
    await session.stop()


async def test_keep_alive_while_idle_only(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    session = engine.open_session(keep_alive_interval_s=0.2)
    await session.create()
    await session.start()
    await asyncio.sleep(0.5)  # no socket yet: the REST keep-alive
    rest_calls = [c for c in fake.calls_of("keep_alive") if c.get("via") == "rest"]
    assert 1 <= len(rest_calls) <= 3
    await session.open_realtime()
    assert await session.wait_connected(5)
    before = len(fake.calls_of("keep_alive"))
    await asyncio.sleep(0.5)  # socket connected: LITE's own session.keep_alive
    on_socket = [c for c in fake.calls_of("keep_alive")[before:] if c.get("via") == "ws"]
    assert 1 <= len(on_socket) <= 3 and len(fake.calls_of("keep_alive")) - before == len(on_socket)
    before = len(fake.calls_of("keep_alive"))
    for _ in range(8):  # talking is activity: no keep-alive is needed meanwhile
        await session.speak(pcm(0.05))
        await asyncio.sleep(0.08)
    assert len(fake.calls_of("keep_alive")) == before
    assert session.keep_alives_sent >= 2
    await session.stop()


async def test_socket_drop_is_reported_and_recoverable(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    session, events = await connected_session(engine)
    lost: list[tuple[str, str]] = []
    session.on_lost = lambda reason, message: lost.append((reason, message))
    assert session.session_id is not None
    await fake.drop_websocket(session.session_id)
    dropped = await events.wait("realtime.dropped")
    assert len(dropped) == 1 and [reason for reason, _ in lost] == ["realtime_dropped"]
    assert session.state is SessionState.STARTED  # the paid session goes on without its socket
    with pytest.raises(LiveAvatarStateError):
        await session.speak(pcm(0.1))
    await session.open_realtime()
    assert await session.wait_connected(5)
    event_id = await session.speak(pcm(0.2))
    await session.speak_end()
    await fake.wait_for("speak_end")
    assert fake.spoken(session.session_id)[event_id] == pcm(0.2)
    assert await session.stop() is True
    assert len(events.of("realtime.dropped")) == 1 and len(lost) == 1  # our own close is not a drop


# -- stop ----------------------------------------------------------------------------------------------


async def test_stop_is_idempotent(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    session, events = await connected_session(engine)
    results = await asyncio.gather(session.stop("AGENT_HANG_UP"), session.stop(), session.stop())
    assert results == [True, True, True] and await session.stop() is True
    assert session.state is SessionState.STOPPED
    stops = fake.calls_of("stop")
    assert len(stops) == 1 and stops[0]["reason"] == "AGENT_HANG_UP" and stops[0]["auth"] == "bearer"
    assert session.session_id is not None and fake.sessions[session.session_id].state == "stopped"
    with pytest.raises(LiveAvatarStateError):
        await session.speak(pcm(0.1))
    assert not events.of("realtime.dropped")


async def test_stop_is_bounded_when_the_service_never_answers(fake: FakeLiveAvatar) -> None:
    engine = LiveAvatarEngine(settings_for(fake, stop_timeout_s=0.5))
    try:
        session = engine.open_session()
        await session.create()
        await session.start()
        fake.hang_next("stop")
        began = time.monotonic()
        assert await session.stop() is False  # no raise
        assert time.monotonic() - began < 1.0
        assert session.state is SessionState.STOPPED and session.stop_error
    finally:
        await engine.aclose()


async def test_stop_from_every_state(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    fresh = engine.open_session()
    assert await fresh.stop() is True and fresh.state is SessionState.STOPPED
    assert fake.calls_of("stop") == []  # nothing existed
    with pytest.raises(LiveAvatarStateError):
        await fresh.create()

    minted = engine.open_session()
    await minted.create()
    assert await minted.stop() is True and len(fake.calls_of("stop")) == 1

    failed = engine.open_session()
    await failed.create()
    fake.fail_next("start", status=503)
    with pytest.raises(LiveAvatarServiceError):
        await failed.start()
    assert failed.state is SessionState.FAILED
    assert await failed.stop("SERVER_ERROR") is True  # a failed start may have started: stop it anyway
    assert fake.calls_of("stop")[-1]["session_id"] == failed.session_id

    starting = engine.open_session()
    await starting.create()
    fake.hang_next("start")
    start = asyncio.create_task(starting.start())
    await fake.wait_for("start", 2)  # the injected 503, then this request, in flight
    assert await starting.stop() is True
    with pytest.raises(LiveAvatarStateError, match="stopped during start"):
        await start
    assert fake.calls_of("stop")[-1]["session_id"] == starting.session_id


async def test_cancelled_caller_does_not_cancel_the_stop(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    session, _ = await connected_session(engine)
    waiter = asyncio.create_task(session.stop())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await session.stop() is True
    assert len(fake.calls_of("stop")) == 1


async def test_stop_orphan(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    settings = settings_for(fake)
    token = await engine.rest.create_token("avatar-1")
    await engine.rest.start(token.session_token)
    assert await stop_orphan(settings, token.session_id, token.session_token, "ZOMBIE_SESSION_REAP") is True
    assert fake.sessions[token.session_id].stop_reason == "ZOMBIE_SESSION_REAP"
    assert fake.calls_of("stop")[-1]["auth"] == "bearer"

    other = await engine.rest.create_token("avatar-1")
    await engine.rest.start(other.session_token)
    assert await stop_orphan(engine.rest, other.session_id, "expired-token", "ZOMBIE_SESSION_REAP") is True
    assert fake.calls_of("stop")[-1] == {"session_id": other.session_id, "reason": "ZOMBIE_SESSION_REAP",
                                         "auth": "api_key", "was": "started"}
    fake.fail_next("stop", status=500)
    fake.fail_next("stop", status=502)  # the retry fails too
    third = await engine.rest.create_token("avatar-1")
    assert await stop_orphan(settings, third.session_id, third.session_token, "node_dead") is False
    fake.fail_next("stop", status=500)
    fake.fail_next("stop", status=500)
    with pytest.raises(LiveAvatarServiceError):  # the engine's form raises: the sweeper keeps the row
        await engine.stop_orphan(third.session_id, third.session_token, "node_dead")
    assert await engine.stop_orphan(third.session_id, third.session_token, "node_dead") is True
    assert fake.sessions[third.session_id].stop_reason == "ZOMBIE_SESSION_REAP"  # ours, mapped
    assert await engine.stop_orphan("0b6d1f0c-6f58-4d4e-9d63-2f1d6a7c9a10", "gone") is True  # 404: nothing runs


async def test_resume_a_stored_session(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    minted = await engine.open_session("avatar-7", "low").create()  # at user-session creation
    assert fake.sessions[minted.session_id].request["video_settings"] == {"quality": "low"}
    other_node = LiveAvatarEngine(settings_for(fake))
    try:
        recorder = Recorder()
        session = other_node.resume_session(minted.session_id, minted.session_token, on_event=recorder)
        assert session.state is SessionState.TOKEN and session.session_id == minted.session_id
        room = await session.start()
        assert room.session_id == minted.session_id and room.max_session_duration_s == 1200
        await session.open_realtime()
        await session.speak(pcm(0.2))
        await session.speak_end()
        await recorder.wait("agent.speak_ended")
        assert await session.stop("call_ended") is True
        assert fake.sessions[minted.session_id].stop_reason == "USER_CLOSED"  # ours, as the service's nearest
    finally:
        await other_node.aclose()


def test_our_stop_reasons_map_to_the_services() -> None:
    assert service_reason("AGENT_HANG_UP") == "AGENT_HANG_UP" and service_reason("user_closed") == "USER_CLOSED"
    assert service_reason("max_session_duration") == "MAX_DURATION_REACHED"
    assert {service_reason(r) for r in ("start_failed", "realtime_failed", "no_video", "session_not_stored")} == {
        "SERVER_ERROR"
    }
    assert service_reason("node_dead") == "ZOMBIE_SESSION_REAP" and service_reason("call_ended") == "USER_CLOSED"


async def test_engine_close_stops_only_sessions_that_may_bill(fake: FakeLiveAvatar) -> None:
    engine = LiveAvatarEngine(settings_for(fake))
    minted = engine.open_session()
    await minted.create()  # stored for a later call, maybe on another node: not stopped at our shutdown
    failed = engine.open_session()
    await failed.create()
    fake.fail_next("start", status=500)
    with pytest.raises(LiveAvatarServiceError):
        await failed.start()
    await engine.aclose()
    assert [c["session_id"] for c in fake.calls_of("stop")] == [failed.session_id]
    assert minted.session_id is not None and fake.sessions[minted.session_id].state == "created"


async def test_service_side_end_and_errors_reach_the_caller(fake: FakeLiveAvatar, engine: LiveAvatarEngine) -> None:
    session, events = await connected_session(engine)
    lost: list[tuple[str, str]] = []
    session.on_lost = lambda reason, message: lost.append((reason, message))
    assert session.session_id is not None
    starving = {"type": "error", "error": {"type": "video_starvation", "message": "slow"}}
    await fake.send_event(session.session_id, starving)
    await fake.send_event(session.session_id, {"type": "warning", "warning": {"type": "w", "message": "m"}})
    assert (await events.wait("error"))[0]["error"]["type"] == "video_starvation"
    await events.wait("warning")
    await stop_orphan(settings_for(fake), session.session_id, None, "MAX_DURATION_REACHED")  # the service ends it
    await events.wait("realtime.dropped")
    assert [reason for reason, _ in lost] == ["session_closed"]
    assert session.state is SessionState.STARTED
    assert await session.stop() is True  # already stopped there: stopping again is harmless


# -- resources -------------------------------------------------------------------------------------------


def _connections_to(port: int) -> list[Any]:
    return [
        c for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]


async def test_no_tasks_or_sockets_left_after_aclose(fake: FakeLiveAvatar) -> None:
    port = int(fake.api_url.rsplit(":", 1)[1])
    tasks_before = set(asyncio.all_tasks())
    engine = LiveAvatarEngine(settings_for(fake))
    session, events = await connected_session(engine, keep_alive_interval_s=0.1)
    await session.speak(pcm(0.5))
    await session.speak_end()
    await events.wait("agent.speak_ended")
    running = engine.open_session()
    await running.create()
    await running.start()  # left running: engine.aclose() must stop it
    assert _connections_to(port)
    http = engine._http
    await engine.aclose()
    await engine.aclose()  # idempotent
    assert http is not None and http.closed
    assert running.state is SessionState.STOPPED and session.state is SessionState.STOPPED
    assert {c["session_id"] for c in fake.calls_of("stop")} == {session.session_id, running.session_id}
    async with asyncio.timeout(2):  # the fake's handlers end as the client's sockets close
        while _connections_to(port) or _ours(asyncio.all_tasks() - tasks_before):
            await asyncio.sleep(0.02)


def _ours(tasks: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks of this client, its fake or aiohttp (other fixtures of the run may have their own)."""
    mine = set()
    for task in tasks:
        code = getattr(task.get_coro(), "cr_code", None)
        where = code.co_filename if code is not None else ""
        if task is not asyncio.current_task() and ("liveavatar" in where or "aiohttp" in where):
            mine.add(task)
    return mine


# -- events ----------------------------------------------------------------------------------------------


def test_parse_event_accepts_both_field_shapes() -> None:
    assert parse_event('{"type":"agent.speak_started","event_id":"u1","task":{"id":"u1"}}') == SpeakStarted("u1")
    assert parse_event('{"type":"agent.speak_ended","event_id":"x","source_event_id":"u1"}') == SpeakEnded("u1")
    assert parse_event('{"type":"session.state_updated","state":"connected"}') == StateUpdated("connected")
    error = parse_event('{"type":"error","error":{"type":"video_starvation","message":"slow","event_id":"u2"}}')
    assert error == ServiceError("video_starvation", "slow", "u2")
    assert parse_event('{"type":"warning","warning":{"type":"w","message":"m"}}') == ServiceWarning("w", "m")
    assert parse_event('{"type":"error","message":"flat"}') == ServiceError("error", "flat", None)
    state = parse_event('{"type":"agent.state_updated","previous_state":"idle","new_state":"talking"}')
    assert state == AgentStateUpdated("idle", "talking")
    assert parse_event('{"type":"agent.audio_buffer_cleared","source_event_id":"i1"}') == BufferAck("cleared", "i1")
    interrupted = parse_event('{"type":"agent.speak_interrupted","event_id":"u3"}')
    assert interrupted == SpeakInterrupted("u3")
    assert interrupted.raw == {"type": "agent.speak_interrupted", "event_id": "u3"}
    assert interrupted.name == "agent.speak_interrupted"
    assert isinstance(parse_event('{"type":"agent.pose_changed"}'), Unknown)
    assert isinstance(parse_event("not json"), Unknown)


# -- with a LiveKit room (duck-typed like tests.fakes.livekit_fake) ------------------------------------------


class StubRoom:
    def __init__(self) -> None:
        self.present: set[str] = set()
        self.joined: list[str] = []
        self.audio: list[tuple[bytes, int]] = []
        self.cleared = 0
        self.closed_with: str | None = None
        self._joined = asyncio.Event()

    def push_audio(self, pcm_bytes: bytes, sample_rate: int = 24000) -> None:
        self.audio.append((pcm_bytes, sample_rate))

    def clear_audio(self) -> int:
        self.cleared += 1
        return 0

    def join(self, identity: str) -> None:
        self.present.add(identity)
        self.joined.append(identity)
        self._joined.set()

    async def wait_joined(self, identity: str | None = None, timeout: float = 10) -> str:
        async with asyncio.timeout(timeout):
            await self._joined.wait()
        return self.joined[-1]

    async def disconnect_all(self, reason: str = "room closed") -> None:
        self.closed_with = reason


class StubLiveKit:
    url = "ws://127.0.0.1:7880"

    def __init__(self) -> None:
        self.rooms: dict[str, tuple[StubRoom, dict[str, int]]] = {}

    def token(self, room: str, identity: str, ttl_s: int = 3600) -> str:
        return f"jwt:{room}:{identity}"

    def room(self, name: str, *, width: int = 512, height: int = 512, fps: int = 25) -> StubRoom:
        self.rooms[name] = (StubRoom(), {"width": width, "height": height, "fps": fps})
        return self.rooms[name][0]


async def test_with_a_livekit_room() -> None:
    livekit = StubLiveKit()
    service = FakeLiveAvatar(livekit=livekit, video_size=(640, 480), fps=30, playback_speed=10.0)
    await service.start()
    engine = LiveAvatarEngine(settings_for(service))
    try:
        recorder = Recorder()
        session = engine.open_session(on_event=recorder)
        await session.create()
        room_access = await session.start()
        sid = room_access.session_id
        assert room_access.livekit_url == livekit.url
        assert room_access.livekit_client_token == f"jwt:{sid}:client-{sid}"
        room, size = livekit.rooms[sid]
        assert size == {"width": 640, "height": 480, "fps": 30}
        await session.open_realtime()
        event_id = await session.speak(pcm(0.4))  # held: nobody is in the room yet
        assert not await session.wait_connected(0.3)
        room.join(f"client-{sid}")
        assert await session.wait_connected(3)
        await session.speak_end()
        await recorder.wait("agent.speak_ended")
        assert b"".join(a for a, _ in room.audio) == pcm(0.4) and {r for _, r in room.audio} == {24000}
        assert service.spoken(sid) == {event_id: pcm(0.4)}
        await session.speak(pcm(1.0))
        await session.interrupt()
        await recorder.wait("agent.speak_interrupted")
        assert room.cleared == 1
        assert await session.stop() is True
        assert room.closed_with is not None
    finally:
        await engine.aclose()
        await service.close()
