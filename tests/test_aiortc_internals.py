"""The reaches into aiortc are checked at start: an aiortc without them refuses to serve."""

from __future__ import annotations

import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender

from media import aiortc_internals
from media.aiortc_internals import UnsupportedAiortc, check_aiortc
from signaling.app import build_app
from signaling.settings import Settings


def test_the_pinned_aiortc_has_what_we_reach_for() -> None:
    check_aiortc()


def test_another_aiortc_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc_internals, "version", lambda _: "1.99.0")
    with pytest.raises(UnsupportedAiortc, match="1.99.0 is not supported"):
        check_aiortc()


def test_a_missing_rtp_hook_refuses_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RTCRtpReceiver, "_handle_rtp_packet")
    with pytest.raises(UnsupportedAiortc, match="_handle_rtp_packet"):
        build_app(Settings(dev_mode=True, jwt_secret="s" * 40))


def test_a_sender_that_no_longer_packs_encoded_frames_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def encodes_everything(self, codec):  # type: ignore[no-untyped-def]
        return await self.encode(codec)

    monkeypatch.setattr(RTCRtpSender, "_next_encoded_frame", encodes_everything)
    with pytest.raises(UnsupportedAiortc, match="pre-encoded"):
        check_aiortc()
