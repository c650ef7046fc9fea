"""A user session's agent session: made together with the user session, taken up by its call.

Creating it when the session is created links user, agent and avatar sessions from the start; the
call then continues that agent session instead of making its own. If it could not be made then
(the agent was away), the call makes it when it starts, as before.
"""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

from agent_bridge.interfaces import Agent, Conversation

log = logging.getLogger(__name__)


class AgentSessionStore(Protocol):
    async def agent_session_of(self, session_id: uuid.UUID) -> str | None: ...
    async def set_agent_session(self, session_id: uuid.UUID, agent_session_id: str) -> None: ...


class AgentSessionOpener:
    def __init__(self, agent: Agent | None, store: AgentSessionStore) -> None:
        self._agent = agent
        self._store = store

    @property
    def agent(self) -> Agent | None:
        """The agent of this node's calls (None: calls here have none), for chat without a call."""
        return self._agent

    async def open(self, user_session_id: uuid.UUID, user_id: str) -> str | None:
        """Make and store the agent session; None if the agent keeps none, or could not make one now."""
        if self._agent is None:
            return None
        # Not closed afterwards: closing a conversation deletes its agent session, which the call will use.
        conversation = self._agent.open_conversation(str(user_session_id), user_id)
        try:
            agent_session_id = await conversation.start()
        except Exception as exc:  # the call tries again when it starts
            log.warning("creating the agent session of %s failed: %s", user_session_id, exc)
            return None
        if agent_session_id is not None:
            await self._store.set_agent_session(user_session_id, agent_session_id)
        return agent_session_id


async def start_call_conversation(conversation: Conversation, store: AgentSessionStore | None, session_id: uuid.UUID) -> None:
    """Begin a call's conversation: on the agent session made with the user session, else on a new
    one, which is then stored. Raises only if the agent itself failed; a store failure is logged."""
    made_earlier: str | None = None
    if store is not None:
        try:
            made_earlier = await store.agent_session_of(session_id)
        except Exception:  # without the stored link the call makes its own agent session
            log.warning("call %s: reading its agent session failed", session_id, exc_info=True)
    if made_earlier is not None:
        conversation.resume(made_earlier)
    agent_session_id = await conversation.start()
    if agent_session_id is not None and agent_session_id != made_earlier and store is not None:
        try:
            await store.set_agent_session(session_id, agent_session_id)
        except Exception:  # the call goes on; only the stored link is missing
            log.warning("call %s: storing agent session %s failed", session_id, agent_session_id, exc_info=True)
