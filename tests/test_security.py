"""Safe to expose: refusing unsafe settings, tokens only where they belong, our own error text, security
headers, validated admin limits, and the per-user and per-IP request rate limit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiortc import RTCPeerConnection

from signaling.auth import TokenAuthority
from signaling.rate_limit import RateLimiter
from signaling.settings import Settings, UnsafeSettings
from storage.database import Database
from tests.conftest import TEST_JWT_SECRET, RunningServer, server_settings, start_server

ROOT = Path(__file__).resolve().parent.parent

# What PyJWT, json and the SDP parser say about bad input; none of it may reach a client.
LIBRARY_PHRASES = (
    "Not enough segments",
    "Signature verification failed",
    "The specified alg value is not allowed",
    "Invalid audience",
    "Invalid issuer",
    "Signature has expired",
    'Token is missing the "iss" claim',
    "Expecting value",
    "Expecting property name",
    "Extra data",
    "line 1 column",
    "invalid literal",
    "not enough values to unpack",
)


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, str]:
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    for phrase in LIBRARY_PHRASES:
        assert phrase not in body["error"]["message"], body
    return body["error"]


# -- 1. secure defaults -----------------------------------------------------------------------------


def run_py(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    unset = ("DEV_MODE", "DEV_MODE_ALLOW_REMOTE", "JWT_SECRET", "JWT_ISSUER", "HOST", "PORT", "DATABASE_URL")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=ROOT, env={**base, "VAR_DIR": str(tmp_path), **env}, capture_output=True, text=True, timeout=60,
    )


def assert_refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Serving on" not in result.stdout
    for word in words:
        assert word in lines[0], lines[0]


def test_unsafe_settings_refuse_to_serve(tmp_path: Path) -> None:
    # Dev mode hands out tokens, so it stays on loopback.
    assert_refused(run_py(tmp_path=tmp_path, DEV_MODE="1", HOST="0.0.0.0"), "DEV_MODE", "DEV_MODE_ALLOW_REMOTE")
    assert_refused(run_py("--host", "192.0.2.10", tmp_path=tmp_path, DEV_MODE="1"), "DEV_MODE")
    # Outside dev mode a secret is required, and a short one is refused.
    assert_refused(run_py(tmp_path=tmp_path / "empty"), "JWT_SECRET")
    assert_refused(run_py(tmp_path=tmp_path, JWT_SECRET="x" * 31), "JWT_SECRET", "32")
    # Other failures keep exit status 1.
    other = run_py(tmp_path=tmp_path, JWT_SECRET="x" * 32, DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    assert other.returncode == 1, other.stderr


def test_safe_settings_pass_the_check(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "127.0.0.5", "::1", "[::1]", "localhost"):
        Settings(dev_mode=True, host=host, var_dir=tmp_path).check_safe_to_serve()
    Settings(dev_mode=True, host="0.0.0.0", dev_mode_allow_remote=True, var_dir=tmp_path).check_safe_to_serve()
    Settings(host="0.0.0.0", jwt_secret="x" * 32, var_dir=tmp_path).check_safe_to_serve()
    with pytest.raises(UnsafeSettings):
        Settings(host="0.0.0.0", jwt_secret="é" * 15, var_dir=tmp_path).check_safe_to_serve()  # 30 bytes
    defaults = Settings.from_env({})
    assert not defaults.dev_mode and not defaults.dev_mode_allow_remote and defaults.jwt_issuer is None


def test_image_and_example_leave_dev_mode_off() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "DEV_MODE=1" not in dockerfile
    assert any(line.startswith("USER ") and "root" not in line for line in dockerfile.splitlines())
    example = (ROOT / ".env.example").read_text().splitlines()
    assert "DEV_MODE=0" in example
    for name in ("DEV_MODE_ALLOW_REMOTE", "JWT_ISSUER", "RATE_LIMIT_REQUESTS_PER_MINUTE"):
        assert any(name in line for line in example), name


def test_token_command_signs_the_issuer(tmp_path: Path) -> None:
    secret = "s" * 40
    result = run_py("token", "--user", "alice", tmp_path=tmp_path, JWT_SECRET=secret, JWT_ISSUER="https://auth.example.test")
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"], audience="authenticated",
                        issuer="https://auth.example.test")
    assert claims["sub"] == "alice"


# -- 2. ?access_token= only on the events WebSocket -------------------------------------------------


async def test_query_token_only_on_the_events_websocket(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    token = loopback_server.token("query-token-user")
    async with http.post(f"{loopback_server.base_url}/api/v1/sessions", headers={"Authorization": f"Bearer {token}"}) as resp:
        session_id = (await resp.json())["session_id"]
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    for path in (f"/api/v1/sessions/{session_id}", "/api/v1/usage", f"/api/v1/sessions/{session_id}/usage"):
        async with http.get(f"{loopback_server.base_url}{path}?access_token={token}", headers=upgrade) as resp:
            assert resp.status == 401, path
            assert (await error_of(resp))["code"] == "unauthorized"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"{loopback_server.base_url}/api/v1/usage?access_token={token}")
    assert refused.value.status == 401
    # The events WebSocket still takes it.
    ws = await http.ws_connect(f"{loopback_server.base_url}/api/v1/sessions/{session_id}/events?access_token={token}")
    assert (await ws.receive_json())["type"] == "state"
    await ws.close()


# -- 3. our own error messages, never a library's ------------------------------------------------


async def two_section_offer(audio: int, video: int) -> str:
    pc = RTCPeerConnection()
    try:
        for _ in range(audio):
            pc.addTransceiver("audio")
        for _ in range(video):
            pc.addTransceiver("video")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def test_error_messages_are_our_own(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    headers = loopback_server.auth("own-words")
    base = loopback_server.base_url
    async with http.post(f"{base}/api/v1/sessions", headers=headers) as resp:
        session_id = (await resp.json())["session_id"]
    offer_url = f"{base}/api/v1/sessions/{session_id}/offer"
    json_headers = {**headers, "Content-Type": "application/json"}
    for raw in (b"{not json", b"", b"   x", b'{"a": 1} trailing', b"\xff\xfe{", b"1" * 5000, b"[" * 50_000):
        async with http.post(offer_url, data=raw, headers=json_headers) as resp:
            assert resp.status == 400, raw[:20]
            assert (await error_of(resp))["code"] == "invalid_json"
    for constant in ("NaN", "Infinity", "-Infinity"):
        async with http.post(offer_url, data=f'{{"sdp": "v=0", "x": {constant}}}', headers=json_headers) as resp:
            assert resp.status == 400, constant
            assert (await error_of(resp))["code"] == "invalid_json"
    bad_sdps = [
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:abc opus/48000\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fingerprint:sha-256\r\n",
        "v=0\r\nm=audio banana\r\n",
        "v=0\r\nnot a line\r\n",
    ]
    for sdp in bad_sdps:
        async with http.post(offer_url, json={"sdp": sdp, "type": "offer"}, headers=headers) as resp:
            assert resp.status == 400, sdp
            assert (await error_of(resp))["code"] == "invalid_sdp"
    for audio, video, kind in ((2, 0, "audio"), (1, 2, "video")):
        async with http.post(offer_url, json={"sdp": await two_section_offer(audio, video), "type": "offer"}, headers=headers) as resp:
            assert resp.status == 400
            error = await error_of(resp)
            assert error["code"] == "invalid_sdp" and f"more than one {kind}" in error["message"], error
    # aiohttp's own 404 and 405 speak our words too.
    async with http.get(f"{base}/api/v1/nowhere", headers=headers) as resp:
        assert resp.status == 404 and (await error_of(resp))["message"] != "Not Found"
    async with http.patch(f"{base}/api/v1/sessions", headers=headers) as resp:
        assert resp.status == 405 and (await error_of(resp))["message"] != "Method Not Allowed"


@pytest.fixture
async def issuer_server(database: Database, tmp_path: Path) -> AsyncIterator[RunningServer]:
    runner, server = await start_server(server_settings(database, tmp_path, jwt_issuer="https://auth.example.test"))
    yield server
    await runner.cleanup()


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the HS512 token's key
async def test_bad_tokens_are_401_json_in_our_words(
    loopback_server: RunningServer, issuer_server: RunningServer, http: aiohttp.ClientSession
) -> None:
    now = int(time.time())
    claims = {"sub": "mallory", "aud": "authenticated", "iat": now, "exp": now + 600}
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    bad = {
        "not a jwt": "not-a-jwt",
        "alg none": unsigned,
        "alg none, no signature part": unsigned.rstrip("."),
        "wrong key": jwt.encode(claims, "another-secret-" + "y" * 32, algorithm="HS256"),
        "expired": jwt.encode({**claims, "exp": now - 60}, TEST_JWT_SECRET, algorithm="HS256"),
        "wrong audience": jwt.encode({**claims, "aud": "service_role"}, TEST_JWT_SECRET, algorithm="HS256"),
        "no sub": jwt.encode({k: v for k, v in claims.items() if k != "sub"}, TEST_JWT_SECRET, algorithm="HS256"),
        "HS512": jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS512"),
    }
    for name, token in bad.items():
        async with http.get(f"{loopback_server.base_url}/api/v1/usage", headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 401, name
            assert (await error_of(resp))["code"] in ("invalid_token", "token_expired"), name
    # With JWT_ISSUER set, `iss` is required and must match.
    issuer = TokenAuthority(TEST_JWT_SECRET, issuer="https://auth.example.test")
    wrong_issuer = TokenAuthority(TEST_JWT_SECRET, issuer="https://evil.example.test")
    url = f"{issuer_server.base_url}/api/v1/usage"
    for name, token in (("wrong issuer", wrong_issuer.issue("mallory")), ("no issuer", TokenAuthority(TEST_JWT_SECRET).issue("mallory"))):
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 401, name
            assert (await error_of(resp))["code"] == "invalid_token", name
    async with http.get(url, headers={"Authorization": f"Bearer {issuer.issue('alice')}"}) as resp:
        assert resp.status == 200
    async with http.post(f"{issuer_server.base_url}/dev/token", json={"user_id": "dev"}) as resp:
        token = (await resp.json())["access_token"]
        assert jwt.decode(token, options={"verify_signature": False})["iss"] == "https://auth.example.test"


# -- 4. security headers ----------------------------------------------------------------------------


async def test_security_headers_on_every_response(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    base = loopback_server.base_url
    for path, headers in (("/", {}), ("/static/app.js", {}), ("/healthz", {}), ("/api/v1/usage", loopback_server.auth()),
                          ("/api/v1/nowhere", {})):
        async with http.get(f"{base}{path}", headers=headers) as resp:
            assert resp.headers.get("X-Content-Type-Options") == "nosniff", path
            assert resp.headers.get("Referrer-Policy") in ("no-referrer", "strict-origin-when-cross-origin"), path
            policy = {d.split()[0]: d.split()[1:] for d in resp.headers["Content-Security-Policy"].split("; ")}
            assert policy["default-src"] == ["'self'"], path
            assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
            host = base.removeprefix("http://")
            assert {"'self'", f"ws://{host}", f"wss://{host}"} <= set(policy["connect-src"])
            assert {"'self'", "blob:", "mediastream:"} <= set(policy["media-src"])
            assert "'unsafe-inline'" not in resp.headers["Content-Security-Policy"]


# -- 5. admin limits are validated ------------------------------------------------------------------


async def test_admin_limits_out_of_range_are_400(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    admin = {"Authorization": f"Bearer {loopback_server.tokens.issue('root', admin=True)}", "Content-Type": "application/json"}
    url = f"{loopback_server.base_url}/api/v1/admin/users/limits-tester/quota"

    async def put(raw: str) -> tuple[int, dict[str, object]]:
        async with http.put(url, data=f'{{"limits": {raw}}}', headers=admin) as resp:
            return resp.status, await resp.json()

    refused = {
        '{"mic_audio_seconds": Infinity}': "invalid_json",
        '{"mic_audio_seconds": NaN}': "invalid_json",
        '{"mic_audio_seconds": -Infinity}': "invalid_json",
        '{"mic_audio_seconds": 1e400}': "invalid_limits",  # json reads it as inf
        '{"mic_audio_seconds": 1e300}': "invalid_limits",
        '{"stt_seconds": 9300000000000}': "invalid_limits",  # x 1e6 passes int64
        '{"mic_audio_seconds": -1}': "invalid_limits",
        '{"tts_characters": -1}': "invalid_limits",
        '{"tts_characters": 1.5}': "invalid_limits",
        '{"agent_tokens": 1e300}': "invalid_limits",
        '{"agent_tokens": 9223372036854775808}': "invalid_limits",
        '{"agent_tokens": ' + "9" * 400 + "}": "invalid_limits",
        '{"agent_tokens": "5"}': "invalid_limits",
        '{"agent_tokens": true}': "invalid_limits",
    }
    for raw, code in refused.items():
        status, body = await put(raw)
        assert status == 400, (raw[:60], body)
        assert body["error"]["code"] == code, (raw[:60], body)  # type: ignore[index]
    status, body = await put('{"agent_tokens": 9223372036854775807, "tts_characters": 2.0, "mic_audio_seconds": 1.5}')
    assert status == 200, body
    limits = body["limits"]
    assert isinstance(limits, dict)
    assert (limits["agent_tokens"], limits["tts_characters"], limits["mic_audio_seconds"]) == (2**63 - 1, 2, 1.5)


# -- 6. request rate limit ------------------------------------------------------------------------


@pytest.fixture
async def limited_server(database: Database, tmp_path: Path) -> AsyncIterator[RunningServer]:
    settings = server_settings(database, tmp_path)
    settings = replace(settings, limits=replace(settings.limits, rate_limit_requests_per_minute=5))
    runner, server = await start_server(settings)
    yield server
    await runner.cleanup()


async def test_rate_limit_per_ip_and_per_user(limited_server: RunningServer) -> None:
    url = f"{limited_server.base_url}/api/v1/usage"

    async def get(session: aiohttp.ClientSession, user: str) -> aiohttp.ClientResponse:
        async with session.get(url, headers=limited_server.auth(user)) as resp:
            await resp.read()
            return resp

    def client_from(address: str) -> aiohttp.ClientSession:
        # All of 127.0.0.0/8 reaches the server on Linux: each address is a client IP of its own.
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0), force_close=True))

    # Per IP: two users share 127.0.0.1's five requests; the sixth is refused though its user has some left.
    async with client_from("127.0.0.1") as one_ip:
        statuses = [(await get(one_ip, u)).status for u in ("ann", "ann", "ann", "bob", "bob")]
        assert statuses == [200] * 5
        async with one_ip.get(url, headers=limited_server.auth("bob")) as resp:
            assert resp.status == 429
            assert (await error_of(resp))["code"] == "rate_limited"
            assert int(resp.headers["Retry-After"]) >= 1
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        async with one_ip.get(f"{limited_server.base_url}/api/v1/nowhere") as resp:
            assert resp.status == 429  # unauthenticated requests count against the IP too
        async with one_ip.get(f"{limited_server.base_url}/healthz") as resp:
            assert resp.status == 200  # only /api/v1 is limited

    # Per user: carol spends her five from one IP; from a fresh IP she is refused, dave is not.
    async with client_from("127.0.0.2") as first, client_from("127.0.0.3") as second:
        assert [(await get(first, "carol")).status for _ in range(5)] == [200] * 5
        async with second.get(url, headers=limited_server.auth("carol")) as resp:
            assert resp.status == 429
            assert (await error_of(resp))["code"] == "rate_limited"
            assert int(resp.headers["Retry-After"]) >= 1
        assert (await get(second, "dave")).status == 200


def test_rate_limiter_refills_and_stays_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(60, max_keys=3, clock=lambda: now[0])  # one request a second, bursts of 60
    assert all(limiter.take(["a"]) == 0.0 for _ in range(60))
    assert limiter.take(["a"]) == pytest.approx(1.0)
    now[0] += 1.0
    assert limiter.take(["a"]) == 0.0
    # The key cap holds; the longest idle key goes first.
    for key in ("b", "c", "d"):
        limiter.take([key])
    assert len(limiter) == 3 and limiter.take(["a"]) == 0.0  # "a" was dropped: a fresh, full bucket
    # Keys idle for a minute are full again, so they are dropped.
    now[0] += 61.0
    limiter.take(["e"])
    assert len(limiter) == 1


async def test_rate_limit_zero_is_unlimited() -> None:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from signaling.limits import Limits
    from signaling.rate_limit import rate_limit

    assert Limits().rate_limit_requests_per_minute == 600
    assert Limits.from_env({"RATE_LIMIT_REQUESTS_PER_MINUTE": "0"}).rate_limit_requests_per_minute == 0
    middleware = rate_limit(0)

    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=204)

    for _ in range(1000):
        assert (await middleware(make_mocked_request("GET", "/api/v1/usage"), handler)).status == 204
