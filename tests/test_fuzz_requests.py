"""Thousands of malformed and hostile requests while a live call keeps sending 50 frames a second.

No request may get a 5xx or a body that is not our JSON error, and the call must not miss a beat.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import replace
from pathlib import Path

import aiohttp
import jwt
import pytest

from signaling import keys
from signaling.auth import TokenAuthority
from storage.database import Database
from tests.conftest import TEST_JWT_SECRET, server_settings, start_server
from tests.rtc_client import RtcClient, sine

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),  # the HS512 token is hostile on purpose
]

ISSUER = "https://auth.example.test/auth/v1"
REQUESTS = 3000
CONCURRENCY = 16


def hostile_tokens(authority: TokenAuthority) -> list[str]:
    now = int(time.time())
    base = {"sub": "mallory", "aud": "authenticated", "iss": ISSUER, "iat": now, "exp": now + 600}
    return [
        jwt.encode(base, None, algorithm="none"),  # alg none
        jwt.encode(base, "another-secret-" + "z" * 32, algorithm="HS256"),  # wrong key
        jwt.encode({**base, "exp": now - 60}, TEST_JWT_SECRET, algorithm="HS256"),  # expired
        jwt.encode({**base, "aud": "someone-else"}, TEST_JWT_SECRET, algorithm="HS256"),  # wrong audience
        jwt.encode({**base, "iss": "https://evil.example"}, TEST_JWT_SECRET, algorithm="HS256"),  # wrong issuer
        jwt.encode({k: v for k, v in base.items() if k != "iss"}, TEST_JWT_SECRET, algorithm="HS256"),  # no issuer
        jwt.encode({**base, "sub": ""}, TEST_JWT_SECRET, algorithm="HS256"),  # empty subject
        jwt.encode({**base, "sub": "x" * 5000}, TEST_JWT_SECRET, algorithm="HS256"),  # huge subject
        jwt.encode(base, TEST_JWT_SECRET, algorithm="HS512"),  # another algorithm
        "not.a.jwt", "....", "a" * 9000, "", "Bearer", "\u00e9\u00e9\u00e9",
        authority.issue("fuzzer"),  # valid, someone with no sessions here
    ]


def mutate_sdp(rng: random.Random, sdp: str) -> str:
    lines = sdp.split("\r\n")
    choice = rng.randrange(8)
    if choice == 0:
        return "\r\n".join(lines[: rng.randrange(len(lines))])
    if choice == 1:
        i = rng.randrange(len(lines))
        lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)] + "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(8))
        return "\r\n".join(lines)
    if choice == 2:
        return sdp.replace("m=audio", "m=audio\r\nm=audio", 1)
    if choice == 3:
        return sdp + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" * rng.randrange(1, 60)
    if choice == 4:
        return sdp.replace("a=fingerprint", "a=fingerprint:sha-256 ZZ", 1)
    if choice == 5:
        return "".join(rng.choice("v=0mc\r\n:;/ ") for _ in range(rng.randrange(400)))
    if choice == 6:
        return sdp.replace("opus", "notacodec")
    return "v=0\r\n" + "a=candidate:" + "1" * 3000


def candidate_bodies(rng: random.Random) -> object:
    return rng.choice([
        {"candidate": "candidate:" + "x" * rng.randrange(2000)},
        {"candidate": 5},
        {"candidate": "candidate:1 1 UDP 1 999.1.1.1 99999999 typ host"},
        {"candidate": "candidate:1 1 UDP 2130706431 10.0.0.1 40000 typ host", "sdpMLineIndex": "zero"},
        {"candidate": "candidate:1 1 UDP 2130706431 10.0.0.1 40000 typ host", "sdpMid": "m" * 100},
        {"candidate": "candidate:1 1 FOO"},
        [], None, "candidate",
    ])


def body_for(rng: random.Random, sdp: str) -> bytes | None:
    kind = rng.randrange(10)
    if kind == 0:
        return None
    if kind == 1:
        return b"{not json"
    if kind == 2:
        return b'{"limits": {"mic_audio_seconds": NaN, "tts_characters": Infinity}}'
    if kind == 3:
        return json.dumps({"limits": {"mic_audio_seconds": 10**400 if rng.random() < 0.5 else -5}}).encode()
    if kind == 4:
        return ("[" * 5000 + "]" * 5000).encode()
    if kind == 5:
        return json.dumps({"sdp": mutate_sdp(rng, sdp), "type": rng.choice(["offer", "answer", None, 3])}).encode()
    if kind == 6:
        return json.dumps(candidate_bodies(rng)).encode()
    if kind == 7:
        return json.dumps({"text": rng.choice(["", " ", "x" * 5000, 17, None])}).encode()
    if kind == 8:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
    return b"x" * (70 * 1024)


async def test_fuzzed_requests_never_5xx_and_the_call_keeps_its_pace(
    database: Database, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = replace(server_settings(database, tmp_path), jwt_issuer=ISSUER)
    runner, server = await start_server(settings)
    authority = TokenAuthority(TEST_JWT_SECRET, issuer=ISSUER)
    victim = RtcClient(server.base_url, authority.issue("victim"))
    victim.source.play(sine(440, 120))
    await victim.connect(http)
    await victim.wait_connected()
    call = server.app[keys.CALLS].get(uuid.UUID(victim.session_id))
    assert call is not None
    tokens = hostile_tokens(authority)
    sdp = victim.pc.localDescription.sdp  # a real offer to mutate
    rng = random.Random(20261126)
    # The fuzzer's own sessions, so hostile offers and candidates reach the call machinery too.
    fuzzer = {"Authorization": f"Bearer {tokens[-1]}"}
    own = []
    for _ in range(4):
        async with http.post(f"{server.base_url}/api/v1/sessions", headers=fuzzer) as resp:
            own.append((await resp.json())["session_id"])
    ids = [victim.session_id, *own, str(uuid.uuid4()), "not-a-uuid", "%00", "..%2F..%2Fetc", "9" * 300, "\u00fc"]
    routes = [("POST", "/offer"), ("POST", "/ice"), ("POST", "/messages"), ("GET", "/events"), ("GET", "/usage"), ("GET", ""), ("DELETE", "")]
    failures: list[str] = []
    statuses: dict[int, int] = {}
    remaining = [REQUESTS]

    async def one(fuzz_http: aiohttp.ClientSession) -> None:
        target = rng.random()
        if target < 0.6:
            method, suffix = rng.choice(routes)
            if method == "DELETE" and rng.random() < 0.9:
                method = "GET"  # hang-ups are rare, so the fuzzer's own sessions live long enough to be fuzzed
            path = f"/api/v1/sessions/{rng.choice(ids)}{suffix}"
        elif target < 0.75:
            method, path = "POST", "/api/v1/sessions"
        elif target < 0.9:
            method, path = "PUT", f"/api/v1/admin/users/{rng.choice(['victim', 'x' * 400, 'a/b', ''])}/quota"
        else:
            method, path = "GET", rng.choice(["/api/v1/usage", "/api/v1/", "/api/v1/sessions/", "/dev/token"])
        if rng.random() < 0.1:
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
        headers = {"Content-Type": rng.choice(["application/json", "text/plain", "application/sdp"])}
        token = tokens[-1] if rng.random() < 0.4 else rng.choice(tokens)
        where = rng.random()
        if where < 0.7:
            headers["Authorization"] = f"Bearer {token}"
        elif where < 0.85:
            path += f"?access_token={token}"
            headers["Upgrade"] = "websocket"
        try:
            async with fuzz_http.request(method, server.base_url + path, data=body_for(rng, sdp), headers=headers) as resp:
                raw = await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status >= 500:
                    failures.append(f"{method} {path}: {resp.status} {raw[:200]!r}")
                elif resp.status >= 400:
                    body = json.loads(raw)
                    if set(body) != {"error"} or set(body["error"]) != {"code", "message"}:
                        failures.append(f"{method} {path}: not our error shape: {raw[:200]!r}")
        except (aiohttp.ClientError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            failures.append(f"{method} {path}: {type(exc).__name__}: {exc}")

    async def worker(fuzz_http: aiohttp.ClientSession) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await one(fuzz_http)

    async def fuzz() -> None:
        async with aiohttp.ClientSession() as fuzz_http:
            await asyncio.gather(*(worker(fuzz_http) for _ in range(CONCURRENCY)))

    try:
        call.audio_out.reset_gap_stats()
        frames_before, started = call.audio_out.frames_sent, time.monotonic()
        received_before = victim.recorder.frames
        # The fuzzer runs on a loop of its own (another thread), like a client elsewhere: the server's
        # loop is judged on its own work, not on scheduling the fuzzer's coroutines too.
        await asyncio.to_thread(asyncio.run, fuzz())
        elapsed = time.monotonic() - started
        sent_rate = (call.audio_out.frames_sent - frames_before) / elapsed
        received_rate = (victim.recorder.frames - received_before) / elapsed
        assert failures == [], failures[:20]
        print("statuses", sorted(statuses.items()), "rates", round(sent_rate, 1), round(received_rate, 1), "gap", round(call.audio_out.max_frame_gap_ms))
        assert sum(statuses.values()) == REQUESTS
        # The call lived through it at its pace, both ways.
        assert call.state == "connected"
        # A few seconds of fuzzing on a shared 2-core machine: one scheduling stall of the whole process
        # may cost a handful of frames, never the pace.
        assert 47 <= sent_rate <= 52, sent_rate
        assert received_rate >= 46, received_rate
        # The fuzzing client shares the server's event loop here, so allow a loaded machine's hiccup.
        assert call.audio_out.max_frame_gap_ms < 250, call.audio_out.max_frame_gap_ms
    finally:
        await victim.hangup(http)
        await runner.cleanup()
