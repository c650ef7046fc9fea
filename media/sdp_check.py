"""Reject a malformed offer before it reaches a peer connection."""

from __future__ import annotations

import re

from aiortc.sdp import SessionDescription

from media.aiortc_internals import parse_sdp


class InvalidOffer(ValueError):
    """The offer cannot be used; the message says why, for the client (never a parser's own text)."""


# RFC 8866: every line is <type>=<value> with a one-letter type; m=<media> <port>[/<n>] <proto> <fmt> ...
_LINE = re.compile(r"[a-z]=")
_MEDIA_LINE = re.compile(r"m=[a-z]+ \d+(/\d+)? \S+( \S+)+")


def _check_lines(sdp: str) -> None:
    """What we can say precisely about a broken offer, found by our own reading of its lines."""
    for number, line in enumerate(sdp.strip().splitlines(), start=1):
        if line and not _LINE.match(line):
            raise InvalidOffer(f"line {number} of the offer's sdp is not of the form <letter>=<value>")
        if line.startswith("m=") and not _MEDIA_LINE.fullmatch(line):
            raise InvalidOffer(f"line {number} of the offer's sdp is not a valid m= line")


def check_offer(sdp: str) -> SessionDescription:
    if not sdp.strip():
        raise InvalidOffer("the offer's sdp is empty")
    if not sdp.lstrip().startswith("v=0"):
        raise InvalidOffer("the offer's sdp must start with v=0")
    _check_lines(sdp)
    try:
        parsed = parse_sdp(sdp)
    except Exception as exc:  # the parser raises several types on bad input
        raise InvalidOffer("the offer's sdp could not be parsed") from exc
    kinds = [m.kind for m in parsed.media]
    if "audio" not in kinds:
        raise InvalidOffer("the offer has no audio section")
    # A call has one microphone and at most one avatar video: more sections only cost us transports.
    for kind in ("audio", "video"):
        if kinds.count(kind) > 1:
            raise InvalidOffer(f"the offer has more than one {kind} section")
    for media in parsed.media:
        if media.kind not in ("audio", "video"):
            continue
        if not (media.ice.usernameFragment and media.ice.password):
            raise InvalidOffer(f"the offer's {media.kind} section has no ICE credentials")
        if media.dtls is None or not media.dtls.fingerprints:
            raise InvalidOffer(f"the offer's {media.kind} section has no DTLS fingerprint")
    return parsed
