"""The bounds every call on this node lives within; 0 means unlimited for each."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CallLimits:
    connect_timeout_s: float = 20.0  # offer accepted -> ICE/DTLS connected, else `connect_timeout`
    media_timeout_s: float = 10.0  # no inbound RTP this long while connected, else `peer_gone`
    max_call_seconds: float = 3600.0  # from the accepted offer, else `max_duration`
    max_candidates: int = 64  # trickled ICE candidates per session, before and after the offer
    max_candidate_chars: int = 512
