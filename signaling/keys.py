"""Typed keys for what the application holds."""

from __future__ import annotations

import weakref
from collections import Counter

from aiohttp import web

from media.agent_sessions import AgentSessionOpener
from media.avatar_service import AvatarService
from media.calls import CallRegistry
from signaling.cluster import Cluster
from signaling.auth import TOKENS
from signaling.drain import Drain
from signaling.errors import MAX_BODY_BYTES
from signaling.node_liveness import NodeLiveness
from signaling.settings import Settings
from agent_bridge.registry import Engines
from storage.database import Database
from storage.preferences import PreferencesRepository
from storage.nodes import NodeRepository
from storage.quotas import QuotaRepository
from storage.sessions import SessionRepository
from storage.usage import UsageRepository
from storage.users import UserRepository

SETTINGS = web.AppKey("settings", Settings)
CLUSTER = web.AppKey("cluster", Cluster)
DB = web.AppKey("db", Database)
USERS = web.AppKey("users", UserRepository)
SESSIONS = web.AppKey("sessions", SessionRepository)
CALLS = web.AppKey("calls", CallRegistry)
USAGE = web.AppKey("usage", UsageRepository)
QUOTAS = web.AppKey("quotas", QuotaRepository)
NODES = web.AppKey("nodes", NodeRepository)
AVATARS = web.AppKey("avatars", AvatarService)
AGENT_SESSIONS = web.AppKey("agent_sessions", AgentSessionOpener)
__all__ = [
    "AGENT_SESSIONS", "AVATARS", "CALLS", "CLUSTER", "DB", "DRAINING", "ENGINES", "MAX_BODY_BYTES", "NODES", "NODE_LIVENESS", "PREFERENCES", "QUOTAS", "SESSIONS", "SESSION_SOCKETS", "SETTINGS", "TOKENS", "USAGE", "USERS", "WEBSOCKETS",
]

WEBSOCKETS = web.AppKey("websockets", weakref.WeakSet)
SESSION_SOCKETS = web.AppKey("session_sockets", Counter)  # open event sockets per session id
DRAINING = web.AppKey("draining", Drain)  # SIGTERM or a lost NODE_ID: no new calls here (signaling/drain.py)
# The voice pipeline's engines (None with PIPELINE=loopback), for the REST voice routes and catalogues.
ENGINES: web.AppKey[Engines | None] = web.AppKey("engines")
PREFERENCES = web.AppKey("preferences", PreferencesRepository)
NODE_LIVENESS = web.AppKey("node_liveness", NodeLiveness)  # heartbeat, NODE_ID lock; reap only through it
