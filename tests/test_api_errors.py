"""Bad input gets a clear JSON 4xx and loses nothing: the server and the call live on."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.conftest import RunningServer
from tests.rtc_client import RtcClient, sine

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, str]:
    body = await resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return body["error"]


async def new_session(http: aiohttp.ClientSession, server: RunningServer, headers: dict[str, str]) -> str:
    async with http.post(f"{server.base_url}/api/v1/sessions", headers=headers) as resp:
        assert resp.status == 201
        body = await resp.json()
        assert set(body) == {"session_id", "ice_servers", "expires_at"}
        return body["session_id"]


async def test_health_and_ready(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{loopback_server.base_url}/healthz") as resp:
        assert resp.status == 200 and await resp.json() == {"status": "ok"}
    async with http.get(f"{loopback_server.base_url}/readyz") as resp:
        assert resp.status == 200


async def test_auth_required_and_checked(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    url = f"{loopback_server.base_url}/api/v1/sessions"
    async with http.post(url) as resp:
        assert resp.status == 401
        assert (await error_of(resp))["code"] == "unauthorized"
    async with http.post(url, headers={"Authorization": "Bearer not-a-jwt"}) as resp:
        assert resp.status == 401
        assert (await error_of(resp))["code"] == "invalid_token"
    expired = loopback_server.tokens.issue("someone", ttl_seconds=-60)
    async with http.post(url, headers={"Authorization": f"Bearer {expired}"}) as resp:
        assert resp.status == 401
        assert (await error_of(resp))["code"] == "token_expired"
    from signaling.auth import TokenAuthority

    forged = TokenAuthority("another-secret-" + "y" * 32).issue("someone")
    async with http.post(url, headers={"Authorization": f"Bearer {forged}"}) as resp:
        assert resp.status == 401


async def test_foreign_and_unknown_sessions_are_404(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    owner = loopback_server.auth("owner")
    session_id = await new_session(http, loopback_server, owner)
    stranger = loopback_server.auth("stranger")
    base = f"{loopback_server.base_url}/api/v1/sessions"
    for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/offer"), ("POST", "/ice"), ("GET", "/events")]:
        async with http.request(method, f"{base}/{session_id}{path}", headers=stranger, json={}) as resp:
            assert resp.status == 404, (method, path)
            assert (await error_of(resp))["code"] == "session_not_found"
    for bogus in ["00000000-0000-0000-0000-000000000000", "not-a-uuid"]:
        async with http.get(f"{base}/{bogus}", headers=owner) as resp:
            assert resp.status == 404
    # The stranger's attempts changed nothing: the owner's session is untouched.
    async with http.get(f"{base}/{session_id}", headers=owner) as resp:
        assert resp.status == 200
        body = await resp.json()
        assert body["status"] == "created" and body["user_id"] == "owner"


async def test_bodies_that_are_not_json_or_too_large(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    headers = loopback_server.auth("body-tester")
    session_id = await new_session(http, loopback_server, headers)
    offer_url = f"{loopback_server.base_url}/api/v1/sessions/{session_id}/offer"
    async with http.post(offer_url, data=b"{not json", headers=headers) as resp:
        assert resp.status == 400
        assert (await error_of(resp))["code"] == "invalid_json"
    async with http.post(offer_url, json=["a", "list"], headers=headers) as resp:
        assert resp.status == 400
    big = {"sdp": "v=0\r\n" + "a=x\r\n" * 20_000, "type": "offer"}
    async with http.post(offer_url, json=big, headers=headers) as resp:
        assert resp.status == 413
        assert (await error_of(resp))["code"] == "body_too_large"
    # Streamed without a Content-Length, the limit still holds.
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"x" * 1024
    async with http.post(offer_url, data=chunks(), headers=headers) as resp:
        assert resp.status == 413
    async with http.get(f"{loopback_server.base_url}/healthz") as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    "sdp",
    [
        "",
        "hello",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",  # no media
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n",
        "v=0\r\nm=audio banana\r\n",
    ],
)
async def test_malformed_sdp_is_400_and_the_session_survives(
    loopback_server: RunningServer, http: aiohttp.ClientSession, sdp: str
) -> None:
    user = "sdp-tester"
    headers = loopback_server.auth(user)
    session_id = await new_session(http, loopback_server, headers)
    url = f"{loopback_server.base_url}/api/v1/sessions/{session_id}/offer"
    async with http.post(url, json={"sdp": sdp, "type": "offer"}, headers=headers) as resp:
        assert resp.status == 400
        assert (await error_of(resp))["code"] == "invalid_sdp"
    # The same session still takes a good offer and carries audio.
    client = RtcClient(loopback_server.base_url, loopback_server.token(user))
    client.session_id = session_id
    try:
        await client.connect(http)
        await client.wait_connected()
    finally:
        await client.hangup(http)


async def test_wrong_type_second_offer_and_bad_candidates(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    user = "state-tester"
    client = RtcClient(loopback_server.base_url, loopback_server.token(user))
    headers = client.headers
    session_id = await client.create_session(http)
    base = f"{loopback_server.base_url}/api/v1/sessions/{session_id}"
    async with http.post(f"{base}/offer", json={"sdp": "v=0", "type": "answer"}, headers=headers) as resp:
        assert resp.status == 400
    async with http.post(f"{base}/ice", json={"candidate": "garbage here"}, headers=headers) as resp:
        assert resp.status == 400
        assert (await error_of(resp))["code"] == "invalid_candidate"
    async with http.post(f"{base}/ice", json={"candidate": 42}, headers=headers) as resp:
        assert resp.status == 400
    try:
        client.source.play(sine(440, 2))
        await client.connect(http)
        await client.wait_connected()
        assert client.pc is not None
        async with http.post(f"{base}/offer", json={"sdp": client.pc.localDescription.sdp, "type": "offer"}, headers=headers) as resp:
            assert resp.status == 409
            assert (await error_of(resp))["code"] == "invalid_state"
        # End of candidates is accepted.
        async with http.post(f"{base}/ice", json={"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}, headers=headers) as resp:
            assert resp.status == 204
        async with http.get(base, headers=headers) as resp:
            assert (await resp.json())["call_state"] == "connected"
    finally:
        await client.hangup(http)
    async with http.post(f"{base}/offer", json={"sdp": "v=0", "type": "offer"}, headers=headers) as resp:
        assert resp.status == 409
        assert (await error_of(resp))["code"] == "session_ended"
    async with http.get(base, headers=headers) as resp:
        body = await resp.json()
        assert body["status"] == "ended" and body["end_reason"] == "hangup"


async def test_unknown_route_and_method_are_json(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{loopback_server.base_url}/api/v1/nope", headers=loopback_server.auth()) as resp:
        assert resp.status == 404
        await error_of(resp)
    async with http.put(f"{loopback_server.base_url}/api/v1/sessions", headers=loopback_server.auth()) as resp:
        assert resp.status == 405
        await error_of(resp)


async def test_access_log_never_shows_the_websocket_token(
    loopback_server: RunningServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    token = loopback_server.token("log-tester")
    headers = {"Authorization": f"Bearer {token}"}
    session_id = await new_session(http, loopback_server, headers)
    with caplog.at_level("INFO", logger="aiohttp.access"):
        ws = await http.ws_connect(f"{loopback_server.base_url}/api/v1/sessions/{session_id}/events?access_token={token}")
        assert (await ws.receive_json())["state"] == "new"
        await ws.close()
        await asyncio.sleep(0.1)
    logged = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any(f"/api/v1/sessions/{session_id}/events" in line for line in logged), logged
    assert not any(token in line or "access_token" in line for line in logged)
