"""LiveAvatar (HeyGen's streaming avatar) in LITE mode: REST and realtime clients, no WebRTC.

The service renders a lip-synced avatar from our TTS audio into a LiveKit room; joining that room
is the media layer's job. Typical life of one call:

    session = engine.open_session(avatar_id=None, quality=None, voice_id=None, on_event=handler)
    token = await session.create()           # session_id + session_token to store (not billed)
    room = await session.start()             # billing starts; room.livekit_url / livekit_client_token
    await session.open_realtime()            # audio is held until the service says "connected"
    await session.speak(pcm24k); await session.speak_end()
    ...
    await session.stop("call_ended")         # on every exit path; bounded, never raises

`handler(name, data)` gets the wire type and frame of each server event, plus "realtime.dropped"
and "keep_alive.failed"; `session.on_lost(reason, message)` hears a dropped socket. A session
minted elsewhere comes back with engine.resume_session(session_id, session_token); one that a
dead node left running is stopped with engine.stop_orphan / stop_orphan.
"""

from agent_bridge.liveavatar.engine import LiveAvatarEngine
from agent_bridge.liveavatar.errors import (
    LiveAvatarAuthError,
    LiveAvatarError,
    LiveAvatarProtocolError,
    LiveAvatarRequestError,
    LiveAvatarServiceError,
    LiveAvatarStateError,
)
from agent_bridge.liveavatar.orphans import stop_orphan
from agent_bridge.liveavatar.realtime import LiveAvatarRealtime, RealtimeState
from agent_bridge.liveavatar.rest import LiveAvatarRest, SessionStart, SessionToken
from agent_bridge.liveavatar.session import LiveAvatarSession, RoomAccess, SessionState
from agent_bridge.liveavatar.settings import LiveAvatarSettings

__all__ = [
    "LiveAvatarAuthError",
    "LiveAvatarEngine",
    "LiveAvatarError",
    "LiveAvatarProtocolError",
    "LiveAvatarRealtime",
    "LiveAvatarRequestError",
    "LiveAvatarRest",
    "LiveAvatarServiceError",
    "LiveAvatarSession",
    "LiveAvatarSettings",
    "LiveAvatarStateError",
    "RealtimeState",
    "RoomAccess",
    "SessionStart",
    "SessionState",
    "SessionToken",
    "stop_orphan",
]
