"""A user session's agent session: made together with the user session, taken up by its call.

Creating it when the session is created links user, agent and avatar sessions from the start; the
call then continues that agent session instead of making its own. If it could not be made then
(the agent was away), the call makes it when it starts, as before.
"""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

from agent_bridge.interfaces import Agent

log = logging.getLogger(__name__)


class AgentSessionStore(Protocol):
    async def agent_session_of(self, session_id: uuid.UUID) -> str | None: ...
    async def set_agent_session(self, session_id: uuid.UUID, agent_session_id: str) -> None: ...


class AgentSessionOpener:
    def __init__(self, agent: Agent | None, store: AgentSessionStore) -> None:
        self._agent = agent
        self._store = store

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
