"""TURN: credentials coturn checks, coturn refusing bad ones, and a real call relayed through coturn.

coturn (Debian's `coturn` package) runs as a subprocess on loopback with `use-auth-secret`; headless Chromium
opens the project's page with `?relay=1` (iceTransportPolicy "relay"), so the only way its audio can reach
the server and come back is through coturn.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aioice import stun
from aioice import turn as aioice_turn
from aioice.stun import TransactionFailed

from signaling import keys
from signaling.app import call_ice_servers
from signaling.settings import Settings
from signaling.turn import TurnConfig, session_ice_servers, turn_user_name
from storage.database import Database
from tests.browser import chromium_args, require_chromium, require_tool, write_wav
from tests.conftest import RunningServer, free_port, server_settings, start_server

REALM = "voice.test"


# -- credentials --------------------------------------------------------------------------------


def test_credentials_are_the_rest_api_form_coturn_checks() -> None:
    config = TurnConfig(urls=("turn:turn.example.org:3478", "turns:turn.example.org:5349"), secret="s3cret", ttl_s=3600)
    # Expected values computed apart from this code:
    #   printf '1700003600:alice' | openssl dgst -sha1 -hmac s3cret -binary | base64
    assert config.turn_credentials("alice", 1_700_000_000.9) == {
        "urls": ["turn:turn.example.org:3478", "turns:turn.example.org:5349"],
        "username": "1700003600:alice",
        "credential": "YAFdW/YDZewZsR1QSgUk2IrfbRI=",
    }
    #   printf '1700003600:server:node-a:8080' | openssl dgst -sha1 -hmac s3cret -binary | base64
    server = config.server_credentials("node-a:8080", 1_700_000_000)
    assert server["username"] == "1700003600:server:node-a:8080"
    assert server["credential"] == "Y3Ap9GEPoWwPkx3w2N9gXpL4weE="


def test_user_ids_that_are_not_plain_are_hashed() -> None:
    assert turn_user_name("alice") == "alice"
    assert turn_user_name("0b5e4c3a-1f2d-4e5f-8a9b-0c1d2e3f4a5b") == "0b5e4c3a-1f2d-4e5f-8a9b-0c1d2e3f4a5b"
    # A ':' would let a user be named like the server ("server:<node>"); non-ASCII and overlong ids are unsafe too.
    for odd in ("server:node-a", "a:b", "zoë", "x" * 129, "", "~abc", "a b"):
        name = turn_user_name(odd)
        assert name.startswith("~") and len(name) == 33 and ":" not in name, (odd, name)
        assert turn_user_name(odd) == name  # stable: one user is one name in coturn's logs and quotas
    assert turn_user_name("a:b") != turn_user_name("a-b")
    config = TurnConfig(urls=("turn:t.example.org",), secret="k")
    username = str(config.turn_credentials("server:evil", 1_000)["username"])
    assert username.count(":") == 1 and username.startswith("4600:~")


def test_turn_settings_from_the_environment() -> None:
    assert TurnConfig.from_env({}) is None
    urls = " turn:a.example.org:3478?transport=udp , turns:a.example.org:5349 "
    config = TurnConfig.from_env({"TURN_URLS": urls, "TURN_SECRET": "k"})
    expected = TurnConfig(urls=("turn:a.example.org:3478?transport=udp", "turns:a.example.org:5349"), secret="k", ttl_s=3600)
    assert config == expected
    short = TurnConfig.from_env({"TURN_URLS": "turn:a.example.org", "TURN_SECRET": "k", "TURN_TTL_S": "60"})
    assert short is not None and short.ttl_s == 60
    for bad in (
        {"TURN_URLS": "turn:a.example.org"},
        {"TURN_SECRET": "k"},
        {"TURN_URLS": "turn:a.example.org", "TURN_SECRET": "k", "TURN_TTL_S": "0"},
        {"TURN_URLS": "turn:a.example.org", "TURN_SECRET": "k", "TURN_TTL_S": "-5"},
        {"TURN_URLS": "turn:a.example.org", "TURN_SECRET": "k", "TURN_TTL_S": "1.5"},
        {"TURN_URLS": "stun:a.example.org", "TURN_SECRET": "k"},
        {"TURN_URLS": "turn:a.example.org?transport=sctp", "TURN_SECRET": "k"},
        {"TURN_URLS": "https://a.example.org", "TURN_SECRET": "k"},
    ):
        with pytest.raises(ValueError):
            TurnConfig.from_env(bad)
    settings = Settings.from_env({"TURN_URLS": "turn:a.example.org", "TURN_SECRET": "k", "TURN_TTL_S": "90"})
    assert settings.turn == TurnConfig(urls=("turn:a.example.org",), secret="k", ttl_s=90)
    assert Settings.from_env({}).turn is None


def test_static_servers_stay_and_the_turn_entry_follows() -> None:
    stun = [{"urls": "stun:stun.example.org:3478"}]
    assert session_ice_servers(stun, None, "alice", 0) == stun
    config = TurnConfig(urls=("turn:t.example.org",), secret="k", ttl_s=10)
    servers = session_ice_servers(stun, config, "alice", 100)
    assert servers[0] == stun[0] and servers[1]["username"] == "110:alice"


def test_each_call_gets_fresh_server_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    config = TurnConfig(urls=("turn:t.example.org:3478",), secret="k", ttl_s=60)
    settings = Settings(node_id="node-a", turn=config, ice_servers=[{"urls": "stun:s.example.org"}])
    provider = call_ice_servers(settings)
    clock = iter([1_000.0, 5_000.0])
    monkeypatch.setattr("signaling.app.time.time", lambda: next(clock))
    first, second = provider(), provider()
    # TURN first (aiortc uses the first TURN URL it can), then the static STUN server.
    assert [s.username for s in first] == ["1060:server:node-a", None]
    assert [s.username for s in second] == ["5060:server:node-a", None]
    assert first[0].urls == ["turn:t.example.org:3478"] and first[1].urls == "stun:s.example.org"
    assert first[0].credential != second[0].credential
    assert [s.urls for s in call_ice_servers(replace(settings, turn=None))()] == ["stun:s.example.org"]


# -- coturn -------------------------------------------------------------------------------------


@dataclass
class Coturn:
    port: int
    secret: str
    log: Path

    def config(self, ttl_s: int = 3600, secret: str | None = None) -> TurnConfig:
        return TurnConfig(urls=(f"turn:127.0.0.1:{self.port}?transport=udp",), secret=secret or self.secret, ttl_s=ttl_s)


def _require_coturn() -> str:
    return require_tool(shutil.which("turnserver"), "coturn is not installed (apt-get install coturn); the TURN tests need its turnserver")


def _answers_stun(port: int) -> bool:
    """A STUN Binding request gets a reply: coturn is listening."""
    request = bytes.fromhex("0001" "0000" "2112a442") + secrets.token_bytes(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(request, ("127.0.0.1", port))
        try:
            reply = sock.recv(2048)
        except OSError:
            return False
    return reply[8:20] == request[8:20]


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    executable = _require_coturn()
    workdir = tmp_path_factory.mktemp("coturn")
    port = free_port()
    relay_base = random.randrange(20_000, 30_000, 100)  # below Linux's ephemeral range, so rarely taken
    server = Coturn(port=port, secret=secrets.token_hex(16), log=workdir / "turn.log")
    args = [
        executable,
        "-n",  # no configuration file: everything is on this line
        "--listening-ip=127.0.0.1",
        f"--listening-port={port}",
        "--relay-ip=127.0.0.1",
        f"--min-port={relay_base}",
        f"--max-port={relay_base + 99}",
        "--use-auth-secret",
        f"--static-auth-secret={server.secret}",
        f"--realm={REALM}",
        # coturn refuses to relay to 127.x by default; here both peers and the relay are on loopback.
        "--allow-loopback-peers",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--fingerprint",
        f"--log-file={server.log}",
        "--simple-log",
        "--no-stdout-log",
        f"--pidfile={workdir / 'turn.pid'}",
        f"--userdb={workdir / 'turndb'}",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not _answers_stun(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log = server.log.read_text() if server.log.exists() else ""
                pytest.fail(f"coturn did not start (exit {process.poll()}):\n{log[-2000:]}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _allocate(coturn: Coturn, entry: dict[str, object]) -> None:
    """A TURN Allocate with this ICE server entry's credentials; raises TransactionFailed when refused."""
    transport, _ = await asyncio.wait_for(
        aioice_turn.create_turn_endpoint(
            asyncio.DatagramProtocol,
            server_addr=("127.0.0.1", coturn.port),
            username=str(entry["username"]),
            password=str(entry["credential"]),
        ),
        timeout=15,
    )
    transport.close()


async def test_coturn_accepts_our_credentials_and_refuses_wrong_or_expired_ones(coturn: Coturn) -> None:
    now = time.time()
    await _allocate(coturn, coturn.config().turn_credentials("alice", now))
    await _allocate(coturn, coturn.config().turn_credentials("a:b", now))  # a hashed name
    await _allocate(coturn, coturn.config().server_credentials("node-a:8080", now))  # colons after the expiry
    with pytest.raises(TransactionFailed) as wrong:
        await _allocate(coturn, coturn.config(secret="not-the-secret").turn_credentials("alice", now))
    assert wrong.value.response.attributes["ERROR-CODE"][0] == 401
    # Signed with the right secret, but its expiry has passed.
    with pytest.raises(TransactionFailed) as expired:
        await _allocate(coturn, coturn.config(ttl_s=60).turn_credentials("alice", now - 120))
    assert expired.value.response.attributes["ERROR-CODE"][0] == 401


async def test_a_relay_allocated_in_time_outlives_its_credential(coturn: Coturn) -> None:
    """Why TURN_TTL_S only has to cover session -> offer: coturn checks the expiry at Allocate, not at Refresh."""
    entry = coturn.config(ttl_s=2).turn_credentials("dave", time.time())
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        lambda: aioice_turn.TurnClientUdpProtocol(
            ("127.0.0.1", coturn.port),
            username=str(entry["username"]),
            password=str(entry["credential"]),
            lifetime=600,
            channel_refresh_time=500,
        ),
        remote_addr=("127.0.0.1", coturn.port),
    )
    try:
        await asyncio.wait_for(client.connect(), timeout=15)
        await asyncio.sleep(3.0)  # the credential has expired now
        refresh = stun.Message(message_method=stun.Method.REFRESH, message_class=stun.Class.REQUEST)
        refresh.attributes["LIFETIME"] = 600
        response, _ = await asyncio.wait_for(client.request_with_retry(refresh), timeout=15)
        assert response.message_class == stun.Class.RESPONSE and response.attributes["LIFETIME"] > 0
        with pytest.raises(TransactionFailed):  # while a new relay with the same credential is refused
            await _allocate(coturn, entry)
    finally:
        if client.refresh_task is not None:
            client.refresh_task.cancel()
        transport.close()


# -- a call relayed through coturn --------------------------------------------------------------


@pytest.fixture
async def turn_server(coturn: Coturn, database: Database, tmp_path: Path) -> AsyncIterator[RunningServer]:
    settings = server_settings(
        database,
        tmp_path,
        turn=coturn.config(),
        ice_servers=[{"urls": f"stun:127.0.0.1:{coturn.port}"}],  # the static STUN entry stays beside TURN
    )
    runner, server = await start_server(settings)
    yield server
    await runner.cleanup()


async def test_session_hands_out_stun_and_this_users_turn_credentials(
    turn_server: RunningServer, coturn: Coturn, http: aiohttp.ClientSession
) -> None:
    before = int(time.time())
    async with http.post(turn_server.base_url + "/api/v1/sessions", headers=turn_server.auth("carol"), json={}) as response:
        assert response.status == 201
        body = await response.json()
    stun, entry = body["ice_servers"]
    assert stun == {"urls": f"stun:127.0.0.1:{coturn.port}"}
    expiry, user = entry["username"].split(":", 1)
    assert user == "carol" and before + 3600 <= int(expiry) <= int(time.time()) + 3600
    assert entry["urls"] == [f"turn:127.0.0.1:{coturn.port}?transport=udp"]
    assert isinstance(entry["credential"], str) and entry["credential"]


STATS_JS = """
async () => {
  const stats = await window.voiceCall.pc.getStats();
  const byId = new Map();
  stats.forEach((s) => byId.set(s.id, s));
  const out = { sent: 0, received: 0, bytesSent: 0, bytesReceived: 0, energy: 0, localType: null, remoteType: null };
  stats.forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "audio") { out.sent = s.packetsSent; out.bytesSent = s.bytesSent; }
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      out.received = s.packetsReceived; out.bytesReceived = s.bytesReceived; out.energy = s.totalAudioEnergy;
    }
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const pair = byId.get(s.selectedCandidatePairId);
      out.localType = byId.get(pair.localCandidateId)?.candidateType ?? null;
      out.remoteType = byId.get(pair.remoteCandidateId)?.candidateType ?? null;
    }
  });
  return out;
}
"""


async def test_audio_flows_both_ways_through_coturn(turn_server: RunningServer, coturn: Coturn, tmp_path: Path) -> None:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    rate = 48_000
    t = np.arange(rate * 10) / rate
    tone = write_wav(tmp_path / "tone.wav", 9000 * np.sin(2 * np.pi * 440 * t), rate)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=chromium_args(tone))
        try:
            page = await browser.new_page()
            await page.goto(turn_server.base_url + "/?relay=1")
            await page.click("#connect")
            await page.wait_for_function(
                "() => document.querySelector('#status').textContent === 'connected'", timeout=30_000
            )
            # Relay policy: the browser offered relay candidates only; the server's answer has its own relay one,
            # so the server's side went through coturn with credentials it minted for this call.
            offer, answer = await page.evaluate(
                "[window.voiceCall.pc.localDescription.sdp, window.voiceCall.pc.remoteDescription.sdp]"
            )
            offered = [line for line in offer.splitlines() if line.startswith("a=candidate:")]
            assert offered and all(" typ relay" in line for line in offered), offered
            assert any(" typ relay" in line for line in answer.splitlines() if line.startswith("a=candidate:")), answer

            await asyncio.sleep(2.0)
            first = await page.evaluate(STATS_JS)
            await asyncio.sleep(1.5)
            second = await page.evaluate(STATS_JS)
            assert second["localType"] == "relay", second
            # The fake microphone goes out, the server's echo of it comes back, and it is not silence.
            for counter in ("sent", "bytesSent", "received", "bytesReceived", "energy"):
                assert second[counter] > first[counter] > 0, (counter, first, second)

            session_id = await page.evaluate("window.voiceCall.sessionId")
            call = turn_server.app[keys.CALLS].get(uuid.UUID(session_id))
            assert call is not None and call.state == "connected"
            await page.click("#hangup")
            await page.wait_for_function(
                "() => document.querySelector('#status').textContent === 'ended'", timeout=10_000
            )
        finally:
            await browser.close()
