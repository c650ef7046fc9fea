"""What the fake LiveKit server knows about a room, in LiveKit's terms: tokens, ids, the avatar's info.

Tokens are LiveKit access tokens: HS256 JWTs whose issuer is the API key, subject the identity,
and whose `video` grant allows `roomJoin` to one `room`.
"""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass

import jwt
from livekit.protocol import models as proto_models


class TokenError(Exception):
    """The access token is missing, badly signed, expired or grants no join to a room."""


def make_token(api_key: str, api_secret: str, room: str, identity: str, ttl_s: int) -> str:
    now = int(time.time())
    claims = {
        "iss": api_key,
        "sub": identity,
        "name": identity,
        "nbf": now - 5,
        "exp": now + ttl_s,
        "video": {"roomJoin": True, "room": room, "canPublish": True, "canSubscribe": True},
    }
    return jwt.encode(claims, api_secret, algorithm="HS256")


def verify_token(token: str, api_key: str, api_secret: str) -> tuple[str, str]:
    """(identity, room) the token grants a join to; TokenError otherwise."""
    try:
        claims = jwt.decode(token, api_secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError as exc:
        raise TokenError(f"invalid token: {exc}") from exc
    if claims.get("iss") != api_key:
        raise TokenError("invalid token: unknown API key")
    video = claims.get("video") or {}
    if not video.get("roomJoin") or not video.get("room"):
        raise TokenError("invalid token: no permission to join a room")
    return str(claims["sub"]), str(video["room"])


def new_sid(prefix: str) -> str:
    """LiveKit-shaped ids: the SDK checks the PA_/TR_/RM_ prefixes."""
    return prefix + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))


@dataclass
class AvatarInfo:
    """Who the fake remote participant is and which tracks it publishes."""

    identity: str
    sid: str
    video_sid: str
    audio_sid: str
    width: int
    height: int
    joined_at: int

    def participant(self) -> proto_models.ParticipantInfo:
        video = proto_models.TrackInfo(
            sid=self.video_sid,
            type=proto_models.TrackType.VIDEO,
            name="avatar_video",
            source=proto_models.TrackSource.CAMERA,
            width=self.width,
            height=self.height,
            mime_type="video/VP8",
            layers=[
                proto_models.VideoLayer(quality=proto_models.VideoQuality.HIGH, width=self.width, height=self.height)
            ],
        )
        audio = proto_models.TrackInfo(
            sid=self.audio_sid,
            type=proto_models.TrackType.AUDIO,
            name="avatar_audio",
            source=proto_models.TrackSource.MICROPHONE,
            mime_type="audio/opus",
        )
        return proto_models.ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            name=self.identity,
            state=proto_models.ParticipantInfo.State.ACTIVE,
            tracks=[video, audio],
            joined_at=self.joined_at,
            is_publisher=True,
            permission=proto_models.ParticipantPermission(can_subscribe=True, can_publish=True, can_publish_data=True),
        )


@dataclass
class DataMessage:
    """A user data packet a client sent into the room."""

    identity: str
    topic: str
    payload: bytes
    reliable: bool = True
