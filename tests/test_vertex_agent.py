"""The Vertex AI Agent Engine agent against a fake of the service over a real socket.

The fake (tests/fakes/vertex_fake.py) answers the REST shapes the Vertex SDK sends; one test runs
the SDK itself against it and checks the engine sends the very same requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from agent_bridge.config import EngineConfig
from agent_bridge.interfaces import EngineError
from agent_bridge.registry import AGENT_ENGINES
from agent_bridge.vertex_agent import RetryPolicy, VertexAgent, VertexConversation, VertexSettings
from agent_bridge.vertex_events import ReplyReader
from agent_bridge.vertex_rest import BearerAuth, Timeouts
from tests.fakes.vertex_fake import ENGINE, Recorded, VertexFake

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUESTION = "what is the weather like in Boston tomorrow"
FAST_RETRY = RetryPolicy(attempts=3, first_delay=0.01, max_delay=0.02)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[VertexFake]:
    service = VertexFake(chunks=4, event_delay=0.05)
    await service.start()
    yield service
    await service.close()


def make_agent(fake: VertexFake, timeouts: Timeouts | None = None, engine: str = ENGINE) -> VertexAgent:
    settings = VertexSettings(engine=engine, endpoint=fake.base_url, insecure=True)
    return VertexAgent(settings, timeouts=timeouts, retry=FAST_RETRY)


@pytest_asyncio.fixture
async def agent(fake: VertexFake) -> AsyncIterator[VertexAgent]:
    engine = make_agent(fake)
    await engine.warm_up()
    yield engine
    await engine.aclose()


async def reply_text(conversation: VertexConversation, text: str = QUESTION) -> str:
    return "".join([delta async for delta in conversation.reply(text)])


# --- start, sessions ---------------------------------------------------------------------------


async def test_engine_is_looked_up_once_at_warm_up(fake: VertexFake, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_agent(fake)
    with caplog.at_level(logging.WARNING, "agent_bridge.vertex_agent"):
        await engine.warm_up()
    conversation = engine.open_conversation("call-1", "alice")
    await reply_text(conversation)
    await conversation.aclose()
    await engine.aclose()

    lookups = [r for r in fake.requests if r.method == "GET"]
    assert [r.path for r in lookups] == [f"/v1/{ENGINE}"]
    assert lookups[0].headers["Authorization"] == "Bearer insecure-local-token"
    assert engine.methods is not None and engine.methods.create_session == "async_create_session"
    assert engine.methods.delete_session == "async_delete_session" and engine.methods.streams_partial
    assert "GOOGLE_API_INSECURE=1" in caplog.text


async def test_sessions_are_created_and_deleted_with_the_callers_id(fake: VertexFake, agent: VertexAgent) -> None:
    alice = agent.open_conversation("call-1", "alice")
    bob = agent.open_conversation("call-2", "bob")
    alice_session, bob_session = await asyncio.gather(alice.start(), bob.start())
    assert await alice.start() == alice_session  # started once
    assert alice.agent_session_id == alice_session and alice_session != bob_session
    assert sorted(fake.created) == sorted([("alice", alice_session), ("bob", bob_session)])

    assert await reply_text(alice) == fake.answer(QUESTION)
    stream = fake.streams[0]
    assert (stream.user_id, stream.session_id, stream.message) == ("alice", alice_session, QUESTION)

    await alice.aclose()
    await bob.aclose()
    assert sorted(fake.deleted) == sorted(fake.created)
    with pytest.raises(EngineError, match="closed"):
        await reply_text(alice)
    creates = [r.body for r in fake.requests_to(":query") if r.body["classMethod"] == "async_create_session"]
    deletes = [r.body for r in fake.requests_to(":query") if r.body["classMethod"] == "async_delete_session"]
    assert {"classMethod": "async_create_session", "input": {"user_id": "alice"}} in creates
    assert {"classMethod": "async_delete_session", "input": {"user_id": "alice", "session_id": alice_session}} in (
        deletes
    )


async def test_the_first_reply_starts_the_session_if_the_call_did_not(fake: VertexFake, agent: VertexAgent) -> None:
    conversation = agent.open_conversation("call-1", "carol")
    assert await reply_text(conversation) == fake.answer(QUESTION)
    assert fake.created == [("carol", conversation.agent_session_id)]
    await conversation.aclose()


async def test_a_failed_deletion_is_logged_and_left_to_expire(
    fake: VertexFake, agent: VertexAgent, caplog: pytest.LogCaptureFixture
) -> None:
    conversation = agent.open_conversation("call-1", "dave")
    session = await conversation.start()
    fake.faults.query_status = [500, 500, 500]
    with caplog.at_level(logging.WARNING, "agent_bridge.vertex_agent"):
        await conversation.aclose()
    assert fake.deleted == [] and session in fake.sessions
    assert "left to expire" in caplog.text and session in caplog.text


# --- replies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("framing", "split"), [("sse", False), ("lines", False), ("sse", True)])
async def test_deltas_stream_in_order_before_the_answer_is_finished(framing: str, split: bool) -> None:
    fake = VertexFake(chunks=4, event_delay=0.2, framing=framing)
    fake.faults.split_frames = split
    await fake.start()
    engine = make_agent(fake)
    conversation = engine.open_conversation("call-1", "erin")
    await conversation.start()

    arrivals: list[tuple[str, bool]] = []  # each delta, and whether the fake had finished its answer then
    async for delta in conversation.reply(QUESTION):
        arrivals.append((delta, fake.streams[0].ended is not None))
    await conversation.aclose()
    await engine.aclose()
    await fake.close()

    assert "".join(d for d, _ in arrivals) == fake.answer(QUESTION)
    assert len(arrivals) == 4  # one per partial event; the final event's repeat of the text is not spoken
    assert not any(finished for _, finished in arrivals[:3])
    assert fake.streams[0].streaming_mode == "sse"  # token-level streaming asked for (the engine takes run_config)


async def test_tokens_follow_usage_metadata_as_the_reply_streams(fake: VertexFake, agent: VertexAgent) -> None:
    conversation = agent.open_conversation("call-1", "frank")
    seen: list[int] = []
    async for _ in conversation.reply(QUESTION):
        seen.append(conversation.tokens)
    first = fake.streams[0].billed_tokens
    assert seen[0] > 0 and seen == sorted(seen)  # counted as it streams, never going back
    assert conversation.tokens == first
    await reply_text(conversation, "and the day after")
    assert conversation.tokens == first + fake.streams[1].billed_tokens  # a running total over the call
    await conversation.aclose()


async def test_whole_response_events_without_run_config(fake: VertexFake) -> None:
    """An engine whose async_stream_query takes no run_config: each event is a whole model response."""
    for method in fake.class_methods:
        if method["name"] == "async_stream_query":
            method["parameters"] = {"type": "object", "properties": {"message": {}, "user_id": {}, "session_id": {}}}
    engine = make_agent(fake)
    conversation = engine.open_conversation("call-1", "gina")
    assert await reply_text(conversation) == fake.answer(QUESTION)
    assert conversation.tokens == fake.streams[0].billed_tokens  # every response's usage, each once
    assert "run_config" not in fake.requests_to(":streamQuery")[0].body["input"]
    await conversation.aclose()
    await engine.aclose()


async def test_events_of_tool_calls_and_thoughts_are_read_once() -> None:
    """Partial text, its final repeat, a tool call and its result, a thought, then a second response."""
    reader = ReplyReader()
    said = [
        reader.feed(event)
        for event in [
            {"partial": True, "content": {"parts": [{"text": "Let me"}]}, "usage_metadata": {"prompt_token_count": 9}},
            {"partial": True, "content": {"parts": [{"text": " check."}]}, "usageMetadata": {"totalTokenCount": 11}},
            {
                "content": {"parts": [{"text": "Let me check."}, {"function_call": {"name": "weather", "args": {}}}]},
                "usage_metadata": {"prompt_token_count": 9, "candidates_token_count": 4, "total_token_count": 13},
            },
            {"content": {"role": "user", "parts": [{"function_response": {"name": "weather", "response": {}}}]}},
            {"content": {"parts": [{"text": "thinking about rain", "thought": True}, {"text": "It is sunny."}]},
             "usage_metadata": {"total_token_count": 30}},
        ]
    ]
    assert said == ["Let me", " check.", "", "", " It is sunny."]
    assert reader.tokens == 13 + 30


# --- barge-in ----------------------------------------------------------------------------------


async def test_barge_in_closes_the_http_stream_at_once(fake: VertexFake, agent: VertexAgent) -> None:
    fake.event_delay = 1.0  # the fake would go on for seconds
    conversation = agent.open_conversation("call-1", "hank")
    await conversation.start()

    # The consumer stops iterating and closes the reply.
    replies = conversation.reply(QUESTION)
    assert await anext(replies)
    closed_at = time.monotonic()
    await replies.aclose()
    await asyncio.wait_for(fake.streams[0].done.wait(), 0.5)
    assert fake.streams[0].ended - closed_at < 0.3 and not fake.streams[0].completed

    # The reply task is cancelled, as the pipeline does on barge-in.
    first_delta = asyncio.Event()

    async def speak() -> None:
        async for _ in conversation.reply(QUESTION):
            first_delta.set()

    task = asyncio.ensure_future(speak())
    await asyncio.wait_for(first_delta.wait(), 2)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(fake.streams[1].done.wait(), 0.5)
    assert fake.streams[1].ended - cancelled_at < 0.3 and not fake.streams[1].completed
    await conversation.aclose()
    assert fake.deleted == [("hank", conversation.agent_session_id)]


# --- faults ------------------------------------------------------------------------------------


async def test_5xx_and_drops_before_any_text_are_retried(fake: VertexFake, agent: VertexAgent) -> None:
    conversation = agent.open_conversation("call-1", "ivy")
    fake.faults.query_status = [503]  # session creation fails once
    await conversation.start()
    fake.faults.stream_status = [503, 500]
    assert await reply_text(conversation) == fake.answer(QUESTION)
    assert len(fake.requests_to(":streamQuery")) == 3

    fake.faults.drop_after_events = [0]  # the stream ends before its first event
    assert await reply_text(conversation) == fake.answer(QUESTION)
    assert [s.completed for s in fake.streams] == [True, False, True]
    await conversation.aclose()


async def test_a_service_that_keeps_failing_raises_engine_error(fake: VertexFake, agent: VertexAgent) -> None:
    conversation = agent.open_conversation("call-1", "jack")
    await conversation.start()
    fake.faults.stream_status_always = 503
    with pytest.raises(EngineError) as failure:
        await reply_text(conversation)
    assert failure.value.engine == "vertex" and "503" in failure.value.message
    assert len(fake.requests_to(":streamQuery")) == FAST_RETRY.attempts
    await conversation.aclose()


async def test_a_slow_service_times_out_into_engine_error(fake: VertexFake) -> None:
    engine = make_agent(fake, Timeouts(response=0.2))
    conversation = engine.open_conversation("call-1", "kate")
    await conversation.start()
    fake.faults.headers_delay = 1.0
    started = time.monotonic()
    with pytest.raises(EngineError, match="no response within"):
        await reply_text(conversation)
    assert time.monotonic() - started < 1.5  # three short attempts, not the fake's pace
    fake.faults.headers_delay = 0
    await conversation.aclose()
    await engine.aclose()


async def test_a_failure_after_text_was_said_raises_engine_error(fake: VertexFake, agent: VertexAgent) -> None:
    conversation = agent.open_conversation("call-1", "liam")
    await conversation.start()
    fake.faults.drop_after_events = [2]
    said: list[str] = []
    with pytest.raises(EngineError, match="after part of the answer"):
        async for delta in conversation.reply(QUESTION):
            said.append(delta)
    assert len(said) == 2 and fake.answer(QUESTION).startswith("".join(said))
    assert len(fake.requests_to(":streamQuery")) == 1  # not sent again: the answer would repeat
    await conversation.aclose()


# --- settings ----------------------------------------------------------------------------------


async def test_missing_or_wrong_settings_fail_naming_the_variable() -> None:
    make = AGENT_ENGINES["vertex"]
    with pytest.raises(ValueError, match="^VERTEX_AGENT_ENGINE is required"):
        make(EngineConfig.from_env({"AGENT_ENGINE": "vertex"}))
    with pytest.raises(ValueError, match="^VERTEX_AGENT_ENGINE must be"):
        make(EngineConfig.from_env({"AGENT_ENGINE": "vertex", "VERTEX_AGENT_ENGINE": "reasoningEngines/1"}))
    with pytest.raises(ValueError, match="^VERTEX_API_ENDPOINT must be https://"):
        make(EngineConfig.from_env({"VERTEX_AGENT_ENGINE": ENGINE, "VERTEX_API_ENDPOINT": "http://127.0.0.1:9"}))
    with pytest.raises(ValueError, match="^VERTEX_API_ENDPOINT must be a base URL"):
        make(EngineConfig.from_env({"VERTEX_AGENT_ENGINE": ENGINE, "VERTEX_API_ENDPOINT": "localhost:9"}))
    agent = make(EngineConfig.from_env({"VERTEX_AGENT_ENGINE": ENGINE}))
    assert isinstance(agent, VertexAgent)
    assert agent.settings.endpoint == "https://us-central1-aiplatform.googleapis.com" and not agent.settings.insecure


async def test_an_unknown_or_unreachable_engine_fails_warm_up_naming_the_variable(fake: VertexFake) -> None:
    missing = make_agent(fake, engine=ENGINE.replace("4242", "999"))
    with pytest.raises(ValueError, match="^VERTEX_AGENT_ENGINE: .*404"):
        await missing.warm_up()
    unreachable = VertexAgent(
        VertexSettings(ENGINE, "http://127.0.0.1:9", insecure=True), timeouts=Timeouts(connect=1), retry=FAST_RETRY
    )
    with pytest.raises(ValueError, match="^VERTEX_API_ENDPOINT: cannot look up"):
        await unreachable.warm_up()
    fake.faults.get_status = [503]  # a passing failure is retried
    retried = make_agent(fake)
    await retried.warm_up()
    await retried.aclose()
    # A reply of an agent that could not start is an engine error, not a crash of the call.
    with pytest.raises(EngineError, match="VERTEX_AGENT_ENGINE"):
        await reply_text(missing.open_conversation("call-1", "mia"))


async def test_tokens_are_refreshed_off_the_event_loop_once_for_all_callers() -> None:
    """ADC tokens expire; the refresh is a blocking HTTP call, so it runs on a worker thread."""
    from google.auth.credentials import Credentials

    class SlowCredentials(Credentials):
        refreshes = 0

        def refresh(self, request: object) -> None:
            time.sleep(0.3)  # the token endpoint, synchronously
            SlowCredentials.refreshes += 1
            self.token = f"token-{SlowCredentials.refreshes}"

    credentials = SlowCredentials()
    credentials._quota_project_id = "billing-project"
    auth = BearerAuth(credentials)
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    ticker = asyncio.ensure_future(tick())
    headers = await asyncio.gather(*(auth.headers() for _ in range(3)))
    ticker.cancel()
    assert SlowCredentials.refreshes == 1
    assert headers[0] == {"authorization": "Bearer token-1", "x-goog-user-project": "billing-project"}
    assert max(gaps) < 0.15  # the loop kept running while the token was fetched


# --- the SDK's own requests --------------------------------------------------------------------


# The SDK's own deprecation notices, not this project's.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
async def test_the_engine_sends_the_requests_the_sdk_sends(fake: VertexFake) -> None:
    import vertexai
    from google.oauth2.credentials import Credentials

    client = vertexai.Client(
        project="demo-project",
        location="us-central1",
        credentials=Credentials(token="insecure-local-token"),
        http_options={"base_url": fake.base_url, "api_version": "v1"},
    )
    remote = await asyncio.to_thread(client.agent_engines.get, name=ENGINE)  # synchronous in the SDK
    session = await remote.async_create_session(user_id="nina")
    streamed = remote.async_stream_query(
        message=QUESTION, user_id="nina", session_id=session["id"], run_config={"streaming_mode": "sse"}
    )
    events = [event async for event in streamed]
    await remote.async_delete_session(user_id="nina", session_id=session["id"])
    await client.aio.aclose()
    by_sdk = shape(fake.requests, session["id"])
    assert len(events) == 5 and [r[0] for r in by_sdk] == ["GET", "POST", "POST", "POST"]

    fake.requests.clear()
    engine = make_agent(fake)
    await engine.warm_up()
    conversation = engine.open_conversation("call-1", "nina")
    assert await reply_text(conversation) == fake.answer(QUESTION)
    await conversation.aclose()
    await engine.aclose()
    assert shape(fake.requests, conversation.agent_session_id) == by_sdk


def shape(requests: list[Recorded], session_id: str | None) -> list[tuple[object, ...]]:
    """What a request is, with the session id made generic (the fake names sessions itself)."""
    headers = ("Content-Type", "Authorization")
    return [(r.method, r.path, r.query, _replace(r.body, session_id), *map(r.headers.get, headers)) for r in requests]


def _replace(body: object, session_id: str | None) -> object:
    if isinstance(body, dict):
        return {k: ("<session>" if v == session_id else _replace(v, session_id)) for k, v in body.items()}
    return body
