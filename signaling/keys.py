"""Typed keys for what the application holds."""

from __future__ import annotations

import weakref

from aiohttp import web

from media.calls import CallRegistry
from signaling.auth import TOKENS
from signaling.errors import MAX_BODY_BYTES
from signaling.settings import Settings
from storage.database import Database
from storage.sessions import SessionRepository
from storage.users import UserRepository

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
USERS = web.AppKey("users", UserRepository)
SESSIONS = web.AppKey("sessions", SessionRepository)
CALLS = web.AppKey("calls", CallRegistry)
__all__ = ["CALLS", "DB", "MAX_BODY_BYTES", "SESSIONS", "SETTINGS", "TOKENS", "USERS", "WEBSOCKETS"]

WEBSOCKETS = web.AppKey("websockets", weakref.WeakSet)
