"""The answer's Opus parameters (media.opus_answer): maxplaybackrate on every Opus payload type of a
pipeline that hears less than the full band, and nothing else touched. (tests/test_browser_call.py shows
Chromium encoding to wideband because of it.)"""

from __future__ import annotations

from media.opus_answer import max_playback_of, with_max_playback

ANSWER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0", "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:0 PCMU/8000",
    "m=audio 9 UDP/TLS/RTP/SAVPF 109", "a=rtpmap:109 OPUS/48000/2",
    "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=rtpmap:96 VP8/90000", "a=fmtp:96 max-fr=30", "",
])  # fmt: skip


def test_every_opus_payload_type_gets_the_rate_and_nothing_else_changes() -> None:
    out = with_max_playback(ANSWER, 16_000)
    lines = out.split("\r\n")
    assert "a=fmtp:111 minptime=10;useinbandfec=1;maxplaybackrate=16000" in lines  # appended to its own
    assert lines[lines.index("a=rtpmap:109 OPUS/48000/2") + 1] == "a=fmtp:109 maxplaybackrate=16000"  # added
    assert "a=fmtp:96 max-fr=30" in lines and out.count("maxplaybackrate") == 2
    unchanged = [line.replace(";maxplaybackrate=16000", "") for line in lines if not line.endswith(" maxplaybackrate=16000")]
    assert unchanged == ANSWER.split("\r\n")
    assert with_max_playback(out, 16_000) == out  # once only
    assert with_max_playback(ANSWER.replace("\r\n", "\n"), 16_000) == out.replace("\r\n", "\n")


def test_a_full_band_pipeline_asks_for_nothing() -> None:
    assert with_max_playback(ANSWER, None) == ANSWER
    assert with_max_playback(ANSWER, 48_000) == ANSWER


def test_a_sender_reads_back_the_rate_the_answer_gives() -> None:
    assert max_playback_of(with_max_playback(ANSWER, 16_000)) == 16_000
    assert max_playback_of(with_max_playback(ANSWER.replace("\r\n", "\n"), 12_000)) == 12_000
    assert max_playback_of(ANSWER) is None
    assert max_playback_of("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n") is None
