"""Shared set-up of the LiveAvatar relay tests: the two fakes and servers that use them, all on NETNS_ADDRESS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from agent_bridge.config import EngineConfig
from agent_bridge.liveavatar.settings import LiveAvatarSettings
from signaling.settings import Settings
from storage.database import Database
from tests.conftest import RunningServer, server_settings
from tests.fakes.liveavatar_fake import DEFAULT_API_KEY, FakeLiveAvatar
from tests.fakes.livekit_fake import FakeLiveKitServer, read_pattern
from tests.netns import NETNS_ADDRESS
from tests.rtc_client import PcmSourceTrack, RtcClient


async def start_fakes(size: tuple[int, int] = (512, 512), fps: int = 25) -> tuple[FakeLiveKitServer, FakeLiveAvatar]:
    livekit = FakeLiveKitServer(NETNS_ADDRESS)
    await livekit.start()
    liveavatar = FakeLiveAvatar(NETNS_ADDRESS, livekit=livekit, video_size=size, fps=fps)
    await liveavatar.start()
    return livekit, liveavatar


def avatar_settings(database: Database, tmp_path: Path, liveavatar: FakeLiveAvatar, **overrides: Any) -> Settings:
    fallback = overrides.pop("avatar_fallback", "rendered")
    la_settings = LiveAvatarSettings(api_key=DEFAULT_API_KEY, api_url=liveavatar.api_url, stop_timeout_s=3.0)
    engines = replace(EngineConfig(), avatar_engine="liveavatar", liveavatar=la_settings, avatar_fallback=fallback)
    engines = replace(engines, **overrides.pop("engine_overrides", {}))
    return server_settings(database, tmp_path, engines=engines, **overrides)


async def avatar_client(
    server: RunningServer, http: aiohttp.ClientSession, *, body: dict[str, Any] | None = None, source: PcmSourceTrack | None = None
) -> RtcClient:
    """A browser stand-in that asks for the avatar and connects."""
    client = RtcClient(server.base_url, server.token(f"avatar-{uuid.uuid4().hex[:8]}"), want_video=True, raw_luma=True)
    if source is not None:
        client.source = source
    client.session_body = {"avatar": True} if body is None else body
    client.keep_video_frames = 200
    await client.connect(http)
    await client.wait_connected(15)
    return client


def heygen_session_of(client: RtcClient) -> str:
    avatar = client.session["avatar"]
    assert isinstance(avatar, dict), client.session
    return str(avatar["heygen_session_id"])


def relayed_frames(client: RtcClient) -> list[tuple[int, float]]:
    """(pattern index, mean luma error) of the frames received that carry the fake avatar's pattern."""
    found = []
    for y_plane in list(client.video_frames):
        index, error = read_pattern(y_plane)
        if index is not None:
            found.append((index, error))
    return found


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def until_async(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def stops_of(liveavatar: FakeLiveAvatar, session_id: str) -> list[dict[str, Any]]:
    return [call for call in liveavatar.calls_of("stop") if call["session_id"] == session_id]


def sound_ms(audio: np.ndarray, threshold: int = 500) -> int:
    """Milliseconds of 20 ms frames whose peak passes `threshold`."""
    frames = audio[: len(audio) // 960 * 960].reshape(-1, 960)
    return int((np.abs(frames).max(axis=1) > threshold).sum()) * 20


async def events_socket(server: RunningServer, http: aiohttp.ClientSession, client: RtcClient) -> aiohttp.ClientWebSocketResponse:
    url = f"{server.base_url}/api/v1/sessions/{client.session_id}/events?access_token={client.token}"
    return await http.ws_connect(url.replace("http", "ws", 1))

