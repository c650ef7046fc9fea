"""Reject a malformed offer before it reaches a peer connection."""

from __future__ import annotations

from aiortc.sdp import SessionDescription


class InvalidOffer(ValueError):
    """The offer cannot be used; the message says why, for the client."""


def check_offer(sdp: str) -> SessionDescription:
    if not sdp.strip():
        raise InvalidOffer("the offer's sdp is empty")
    if not sdp.lstrip().startswith("v=0"):
        raise InvalidOffer("the offer's sdp must start with v=0")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # the parser raises several types on bad input
        raise InvalidOffer(f"the offer's sdp could not be parsed: {exc}") from exc
    if not any(m.kind == "audio" for m in parsed.media):
        raise InvalidOffer("the offer has no audio section")
    for media in parsed.media:
        if media.kind not in ("audio", "video"):
            continue
        if not (media.ice.usernameFragment and media.ice.password):
            raise InvalidOffer(f"the offer's {media.kind} section has no ICE credentials")
        if media.dtls is None or not media.dtls.fingerprints:
            raise InvalidOffer(f"the offer's {media.kind} section has no DTLS fingerprint")
    return parsed
