"""Trickled ICE candidates from the browser: checked and parsed before anything holds them."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCIceCandidate

from media.aiortc_internals import parse_candidate_line


class InvalidCandidate(ValueError):
    """A trickled ICE candidate that cannot be used; the message is ours, for the client."""


@dataclass(frozen=True)
class IceCandidateInit:
    """The browser's RTCIceCandidateInit; an empty candidate means end of candidates."""

    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


def parse_candidate(init: IceCandidateInit, max_chars: int) -> RTCIceCandidate | None:
    """The candidate as aiortc's object; None for end-of-candidates."""
    if max_chars and len(init.candidate) > max_chars:
        raise InvalidCandidate(f"an ICE candidate is at most {max_chars} characters")
    if init.sdp_mid is not None and len(init.sdp_mid) > 32:
        raise InvalidCandidate("`sdpMid` is at most 32 characters")
    line = init.candidate.strip()
    if not line:
        return None
    if line.startswith("candidate:"):
        line = line[len("candidate:") :]
    try:
        candidate = parse_candidate_line(line)
    except Exception as exc:  # the parser asserts and indexes its way through the line
        raise InvalidCandidate("the ICE candidate could not be parsed (expected an SDP candidate line)") from exc
    candidate.sdpMid = init.sdp_mid
    candidate.sdpMLineIndex = init.sdp_mline_index
    return candidate
