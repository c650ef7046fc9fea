"""The OpenAPI description: it names exactly the app's routes, it is valid OpenAPI 3.1, the /docs page renders
it under the server's CSP, and schemathesis fuzzes the running server against it (no 5xx, every answer as
documented)."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import aiohttp
import pytest

from signaling.openapi.spec import app_routes, documented_operations
from tests.browser import require_chromium
from tests.conftest import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
# The events route upgrades to a WebSocket: schemathesis speaks plain HTTP only, and an upgrade it cannot
# complete says nothing about the route (tests/test_call_loopback.py drives it for real).
NOT_FUZZED = {("GET", "/api/v1/sessions/{session_id}/events")}
EXAMPLES_PER_OPERATION = 25
DERANDOMIZE = True  # the same cases every run: a failure here is reproducible


async def fetch_spec(server: RunningServer, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(server.base_url + "/api/v1/openapi.json") as resp:  # no Authorization: it is public
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/json"
        return await resp.json()


def spec_operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


async def test_description_names_exactly_the_app_routes(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    spec = await fetch_spec(loopback_server, http)
    served = set(app_routes(loopback_server.app))
    described = spec_operations(spec)
    assert served, "the router lists no routes"
    assert set(described) == served
    # Nothing is described that the app does not serve (the loopback server runs in dev mode: /dev/token too).
    assert set(documented_operations()) == served, set(documented_operations()) ^ served
    for (method, path), op in described.items():
        assert "undocumented" not in op.get("tags", []), (method, path)
        assert op.get("summary") and op.get("responses"), (method, path)
        in_template = set(re.findall(r"{([^}:]+)}", path))
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == in_template, (method, path, declared, in_template)
        assert all(p["required"] for p in op.get("parameters", []) if p["in"] == "path")
    # The routes that take no user token say so; every other one takes the bearer token (the default).
    public = {key for key, op in described.items() if op.get("security") == []}
    assert public == {
        ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/"), ("GET", "/docs"), ("GET", "/api/v1/openapi.json"),
        ("POST", "/dev/token"),
    }
    assert described[("GET", "/metrics")]["security"] == [{}, {"metricsToken": []}]
    assert spec["security"] == [{"bearerAuth": []}]


async def test_description_is_valid_openapi_3_1(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    import schemathesis
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    spec = await fetch_spec(loopback_server, http)
    assert spec["openapi"].startswith("3.1")
    errors = [str(error)[:300] for error in OPENAPI_31_VALIDATOR.iter_errors(spec)]
    assert errors == []
    schemathesis.openapi.from_dict(spec).validate()
    # Every $ref points at something (the meta-schema does not check that).
    for ref in _refs(spec):
        target: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, ref
            target = target[part]
    # The shared error body is what every error response is.
    error = spec["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]
    for (method, path), op in spec_operations(spec).items():
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (
                    method, path, status,
                )


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


async def test_docs_page_renders_every_operation(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    spec = await fetch_spec(loopback_server, http)
    async with http.get(loopback_server.base_url + "/docs") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        html = await resp.text()
    # Nothing inline the CSP would block, nothing from another origin.
    assert "<script>" not in html and "style=" not in html and "http" not in html
    executable = require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = await browser.new_page()
            problems: list[str] = []
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            await page.goto(loopback_server.base_url + "/docs")
            await page.wait_for_function("() => document.body.dataset.ready === 'true'", timeout=10_000)
            rendered = await page.eval_on_selector_all("details.operation", "nodes => nodes.length")
            tags = await page.eval_on_selector_all("section.tag h2", "nodes => nodes.map(n => n.textContent)")
            await page.click("details.operation summary")  # the first operation opens with its schemas
            schema_nodes = await page.eval_on_selector_all("details.operation[open] .schema", "nodes => nodes.length")
        finally:
            await browser.close()
    assert problems == []
    assert rendered == len(spec_operations(spec))
    assert "sessions" in tags and "server" in tags
    assert schema_nodes > 0


async def test_a_nul_character_is_a_400_not_a_500(loopback_server: RunningServer, http: aiohttp.ClientSession) -> None:
    """The fuzzer's find: Postgres text cannot hold NUL, and a request carrying one was a 500."""
    base = loopback_server.base_url
    async with http.post(base + "/api/v1/sessions", json={"voice_id": "a\u0000b"}, headers=loopback_server.auth()) as resp:
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["code"] in ("invalid_voice", "invalid_characters")
    admin = {"Authorization": f"Bearer {loopback_server.token(admin=True)}"}
    async with http.put(base + "/api/v1/admin/users/a%00b/quota", json={"limits": {"agent_tokens": 1}}, headers=admin) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_user"
    async with http.post(base + "/dev/token", json={"user_id": "a\u0000b"}) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_user"
    # A token whose subject holds one (a token service's bug) is refused like any unusable token.
    nul_subject = {"Authorization": "Bearer " + loopback_server.token("a\u0000b")}
    async with http.get(base + "/api/v1/usage", headers=nul_subject) as resp:
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_token"


def _fuzz(
    spec: dict[str, Any], base_url: str, token: str, only: set[str], *, real_ids: bool, chat_session: str | None = None
) -> list[str]:
    """Schemathesis cases for every operation but NOT_FUZZED, sent to the running server; the failures found."""
    import hypothesis
    import requests
    import schemathesis
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    schema = schemathesis.openapi.from_dict(spec)
    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    with requests.Session() as client:
        for result in schema.get_all_operations():
            operation = result.ok()
            key = (operation.method.upper(), operation.path)
            if key in NOT_FUZZED or operation.path not in only:
                continue
            strategies = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
            if real_ids and ("{session_id}" in operation.path or "{avatar_session_id}" in operation.path):
                # Real ids of the caller's own sessions reach past the 404 into each route's own checks; fresh
                # ones for each operation, since the fuzzer may end them (DELETE).
                ids = _own_sessions(client, base_url, headers)
                real = {name: value for name, value in ids.items() if f"{{{name}}}" in operation.path}
                strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=real))
            if chat_session is not None and key == ("POST", "/api/v1/chat/messages"):
                # Any text to a real session of the caller's: the agent itself answers it.
                bodies = st.fixed_dictionaries(
                    {"content": st.text(min_size=1, max_size=200), "session_id": st.just(chat_session)},
                    optional={"enable_avatar_speech": st.booleans()},
                )
                strategies.append(bodies.flatmap(lambda body: operation.as_strategy(GenerationMode.POSITIVE, body=body)))

            @hypothesis.settings(
                max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=DERANDOMIZE,
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(case=st.one_of(strategies))
            def run(case: Any) -> None:
                response = case.call(base_url=base_url, session=client, headers=headers, timeout=30)
                case.validate_response(response, checks=checks, headers=headers)

            try:
                run()
            except Exception as exc:  # one operation's failures do not hide the next one's
                failures.append(f"{key}: {exc}"[:3000])
    return failures


def _own_sessions(client: Any, base_url: str, headers: dict[str, str]) -> dict[str, str]:
    """A new session and a new avatar session of the fuzzing user (`client` is a requests.Session)."""
    session = client.post(base_url + "/api/v1/sessions", json={}, headers=headers, timeout=30)
    assert session.status_code == 201, session.text
    avatar = client.post(base_url + "/api/v1/avatar/sessions/start", json={}, headers=headers, timeout=30)
    assert avatar.status_code == 201, avatar.text
    return {"session_id": session.json()["session_id"], "avatar_session_id": avatar.json()["avatar_session_id"]}


@pytest.fixture(autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hypothesis keeps its caches (.hypothesis/) under the test run's temporary directory, not in the repo."""
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tmp_path_factory.getbasetemp() / "hypothesis")


@pytest.mark.timeout(240)
async def test_fuzzing_the_running_server_finds_no_5xx_and_no_undocumented_answer(
    loopback_server: RunningServer, http: aiohttp.ClientSession
) -> None:
    spec = await fetch_spec(loopback_server, http)
    # An admin token: the quota route's checks are reached too (it sets limits of made-up users only).
    user_id = f"fuzz-{uuid.uuid4().hex[:8]}"
    token = loopback_server.token(user_id, admin=True)
    # The loopback server runs no speech engines: the voice routes are fuzzed on the voice server.
    voice_paths = {p for p in spec["paths"] if p.startswith("/api/v1/voice/")}
    others = set(spec["paths"]) - voice_paths
    failures = await asyncio.to_thread(_fuzz, spec, loopback_server.base_url, token, others, real_ids=True)
    assert failures == [], "\n\n".join(failures)


@pytest.mark.timeout(240)
async def test_fuzzing_the_voice_and_chat_routes_with_engines(voice_server: RunningServer, http: aiohttp.ClientSession) -> None:
    spec = await fetch_spec(voice_server, http)
    voice_paths = {p for p in spec["paths"] if p.startswith("/api/v1/voice/")}
    assert voice_paths
    token = voice_server.token(f"fuzz-voice-{uuid.uuid4().hex[:8]}")
    async with http.post(voice_server.base_url + "/api/v1/sessions", json={}, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 201, await resp.text()
        session_id = (await resp.json())["session_id"]
    # Chat with the session's agent too: the loopback server has none.
    paths = voice_paths | {"/api/v1/chat/messages"}
    failures = await asyncio.to_thread(
        _fuzz, spec, voice_server.base_url, token, paths, real_ids=False, chat_session=session_id
    )
    assert failures == [], "\n\n".join(failures)
