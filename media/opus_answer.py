"""How wide a browser need encode its microphone for a call, told in the answer's Opus parameters.

RFC 7587's `maxplaybackrate` tells the sender the highest rate the receiver renders, so it can spend its
bits below it. The voice pipeline decodes the caller's Opus straight to 16 kHz for VAD and STT: what a
browser encodes above 8 kHz is decoded and thrown away. With `maxplaybackrate=16000` in the answer, libwebrtc
caps its encoder at wideband, so a speaking microphone sends SILK alone instead of SILK with CELT above it
(hybrid), and libopus decodes a 20 ms packet of it in about half the time (bench/load_audio.py's speech at
32 kb/s: 15 us against 30 us at 16 kHz mono). Pipelines that hear the full band (the echo) ask for nothing.

aiortc writes only its own codec parameters in an answer, so the parameter goes into the answer's text.
"""

from __future__ import annotations

import re

FULL_BAND_HZ = 48_000
_OPUS_RTPMAP = re.compile(r"^a=rtpmap:(\d+) opus/48000", re.IGNORECASE | re.MULTILINE)
_FMTP = re.compile(r"^a=fmtp:(\d+) ")


def with_max_playback(sdp: str, max_playback_hz: int | None) -> str:
    """`sdp` (an answer) with `maxplaybackrate` on every Opus payload type, when the pipeline hears
    less than the full band; unchanged otherwise."""
    if max_playback_hz is None or max_playback_hz >= FULL_BAND_HZ:
        return sdp
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(newline)
    opus = set(_OPUS_RTPMAP.findall(sdp))
    with_fmtp = {match.group(1) for line in lines if (match := _FMTP.match(line))}
    out: list[str] = []
    for line in lines:
        fmtp = _FMTP.match(line)
        if fmtp and fmtp.group(1) in opus and "maxplaybackrate=" not in line:
            line = f"{line};maxplaybackrate={max_playback_hz}"
        out.append(line)
        rtpmap = _OPUS_RTPMAP.match(line)
        if rtpmap and rtpmap.group(1) not in with_fmtp:
            out.append(f"a=fmtp:{rtpmap.group(1)} maxplaybackrate={max_playback_hz}")
    return newline.join(out)


def max_playback_of(sdp: str) -> int | None:
    """The `maxplaybackrate` an SDP gives its (first) Opus payload type, if any: what a sender reads."""
    opus = _OPUS_RTPMAP.search(sdp)
    if opus is None:
        return None
    fmtp = re.search(rf"^a=fmtp:{opus.group(1)} ([^\r\n]*)", sdp, re.MULTILINE)
    rate = re.search(r"maxplaybackrate=(\d+)", fmtp.group(1)) if fmtp else None
    return int(rate.group(1)) if rate else None
