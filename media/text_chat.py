"""A typed message to a session's agent when no call of the session is live (before its offer, after it ended).

The session's stored agent session is continued, so the agent keeps the context the call had (where
the agent keeps one: the offline demo agent keeps none between conversations). The conversation is
not closed afterwards: closing deletes its agent session, which later chats and the call continue.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass

from agent_bridge.interfaces import Agent
from media.agent_sessions import AgentSessionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextReply:
    text: str
    tokens: int  # what the agent counted for this message (every attempt), metered as agent_tokens


async def reply_without_call(agent: Agent, store: AgentSessionStore, session_id: uuid.UUID, user_id: str, text: str) -> TextReply:
    """The agent's whole reply to `text`. Raises what the agent raises (after one retry, see below)."""
    stored = await store.agent_session_of(session_id)
    spent: list[int] = []
    try:
        reply = await _ask(agent, store, session_id, user_id, text, stored, spent)
    except Exception as exc:
        if stored is None:
            raise
        # A call's end deletes its agent session: continue the conversation on a new one.
        log.info("session %s: agent session %s unusable (%s); starting a new one", session_id, stored, exc)
        reply = await _ask(agent, store, session_id, user_id, text, None, spent)
    return TextReply(reply, sum(spent))


async def _ask(
    agent: Agent, store: AgentSessionStore, session_id: uuid.UUID, user_id: str, text: str,
    resume: str | None, spent: list[int],
) -> str:  # fmt: skip
    conversation = agent.open_conversation(str(session_id), user_id)
    if resume is not None:
        conversation.resume(resume)
    try:
        agent_session_id = await conversation.start()
        if agent_session_id is not None and agent_session_id != resume:
            await store.set_agent_session(session_id, agent_session_id)
        parts: list[str] = []
        async with contextlib.aclosing(conversation.reply(text)) as deltas:
            async for delta in deltas:
                parts.append(delta)
        return "".join(parts).strip()
    finally:
        spent.append(conversation.tokens)
