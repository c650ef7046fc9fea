"""How much audio an Opus packet carries, from its TOC byte (RFC 6716, section 3.1)."""

from __future__ import annotations

# Frame length in units of 1/400 s (2.5 ms), by configuration number (TOC bits 7..3).
_SILK = (4, 8, 16, 24)  # 10, 20, 40, 60 ms
_HYBRID = (4, 8)  # 10, 20 ms
_CELT = (1, 2, 4, 8)  # 2.5, 5, 10, 20 ms


def _frame_quarter_ms(config: int) -> int:
    if config < 12:
        return _SILK[config % 4]
    if config < 16:
        return _HYBRID[config % 2]
    return _CELT[config % 4]


def opus_packet_samples(payload: bytes, clock_rate: int = 48_000) -> int:
    """Samples (at `clock_rate`) of audio in one Opus packet; 0 for an empty or malformed one."""
    if not payload:
        return 0
    toc = payload[0]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(payload) < 2:
            return 0
        frames = payload[1] & 0x3F
    return frames * _frame_quarter_ms(toc >> 3) * clock_rate // 400
