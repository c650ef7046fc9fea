"""Telling the service to stop a session: for a session's own stop, and for orphans.

A node that dies mid-call never runs its session's stop(), and the service bills that session
until it idles out (5 minutes) or hits its maximum duration. A sweeper that finds such a session
in the store calls stop_orphan with what was stored when the session was created.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from agent_bridge.liveavatar.errors import (
    LiveAvatarError,
    LiveAvatarRequestError,
    LiveAvatarServiceError,
)
from agent_bridge.liveavatar.rest import LiveAvatarRest
from agent_bridge.liveavatar.settings import LiveAvatarSettings

log = logging.getLogger(__name__)


async def stop_remote(rest: LiveAvatarRest, session_id: str, session_token: str | None, reason: str) -> None:
    """POST stop, once more after a service failure (a blip must not leave a session billing).
    A 404 counts as stopped: the service no longer knows the session. Raises LiveAvatarError."""
    try:
        await rest.stop(session_id, session_token, reason)
    except LiveAvatarServiceError:
        await asyncio.sleep(0.2)
        await rest.stop(session_id, session_token, reason)
    except LiveAvatarRequestError as exc:
        if exc.status != 404:
            raise


async def stop_orphan(
    settings_or_client: LiveAvatarSettings | LiveAvatarRest,
    session_id: str,
    session_token: str | None,
    reason: str = "ZOMBIE_SESSION_REAP",
    *,
    raise_on_failure: bool = False,
) -> bool:
    """Tell the service to stop a session; True when it confirmed, or no longer knows the session.

    The session token is tried first, then the API key (a stored token may have expired). `reason`
    may be ours; it is sent as the service's nearest. Bounded by settings.stop_timeout_s. A
    failure is logged and returned as False, or raised as LiveAvatarError with raise_on_failure
    (for a sweeper that keeps the row and tries again).
    """
    if isinstance(settings_or_client, LiveAvatarRest):
        rest, own = settings_or_client, None
    else:
        own = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=settings_or_client.connect_timeout_s)
        )
        rest = LiveAvatarRest(settings_or_client, own)
    limit = rest.settings.stop_timeout_s
    try:
        async with asyncio.timeout(limit):
            await stop_remote(rest, session_id, session_token, reason)
        return True
    except TimeoutError:
        failure: LiveAvatarError = LiveAvatarServiceError(f"stop: no answer within {limit:g} s")
    except LiveAvatarError as exc:
        failure = exc
    finally:
        if own is not None:
            await own.close()
    log.warning("liveavatar: stopping orphan %s failed: %s", session_id, failure.message)
    if raise_on_failure:
        raise failure
    return False
