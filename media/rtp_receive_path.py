"""Inbound audio decoded on the event loop as its packet arrives, below aiortc's receiver.

aiortc hands every received packet through three queues: aioice queues the datagram for the DTLS
transport's task, the receiver queues each frame its jitter buffer completes for a decoder thread,
and that thread queues the decoded frame back onto the loop for the track's reader: per packet a
task step, a thread wake-up, a self-pipe write and a loop wake-up, a future and another task step.
A 20 ms Opus frame decodes in tens of microseconds, less than those hand-offs cost.

Here, per call:
- `decode_inline` puts an `InlineDecoder` where the receiver keeps its decoder queue: the receiver's
  own code (statistics, jitter buffer, timestamp mapping) still runs for every packet, and each
  frame it completes is decoded at once, by the decoder aiortc would use, and handed to the call;
  the decoder thread aiortc starts finds nothing to do and ends.
- `receive_datagrams_inline` (at the receiver's start) has the selected ICE protocol's datagrams that
  are SRTP go straight to the DTLS transport's own RTP handling, unprotected by its own session,
  instead of through aioice's queue and the transport's task. STUN, DTLS and SRTCP take the usual path.
So the decoded audio is the same, frame for frame, as aiortc's (tests/test_rtp_receive_path.py).
`check_receive_path()` lists what is missing from an aiortc this was not written against.

A pipeline that asks for its audio at one rate (`attach(on_frame, rate)`, e.g. the voice pipeline's
16 kHz) has Opus decoded by libopus straight to that rate, mono (media.libopus): at 16 kHz that is a
third of the decoder's work of 48 kHz stereo, and no resampler after it. Frames that arrive before the
pipeline attaches are kept encoded and decoded when it does, at its rate.
"""

from __future__ import annotations

import asyncio
import fractions
import inspect
import logging
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import av
import numpy as np
import pylibsrtp
from aioice.ice import StunProtocol
from aiortc import RTCRtpReceiver
from aiortc.codecs import get_decoder
from aiortc.codecs.base import Decoder
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import decoder_worker

from media import libopus

log = logging.getLogger(__name__)

OnFrame = Callable[[av.AudioFrame], None]
OnSamples = Callable[[np.ndarray], None]
Task = tuple[RTCRtpCodecParameters, JitterFrame]
# Frames received before the call's pipeline is attached are kept (aiortc's track queue kept them too).
_MAX_EARLY_FRAMES = 250
_RTP_TIME_BASE = fractions.Fraction(1, 48_000)  # Opus's RTP clock, whatever rate it is decoded at
_S16 = av.AudioFormat("s16")
_MONO = av.AudioLayout("mono")

NTP_UNIX_OFFSET_S = 2_208_988_800  # seconds from 1900-01-01 (NTP's epoch) to 1970-01-01
_NTP_UNIX_OFFSET_US = NTP_UNIX_OFFSET_S * 1_000_000  # once here, not per packet


def ntp_ms(time_ns: int) -> int:
    """aiortc's clock.current_ms() for the wall-clock time `time_ns` (ms since the NTP epoch), without
    its datetime arithmetic: datetime.now's microseconds (floored), then total_seconds() * 1000."""
    return int((time_ns // 1000 + _NTP_UNIX_OFFSET_US) / 1_000_000 * 1000)


# The protocols whose datagrams were rerouted, by DTLS transport (to undo it at the end of the call).
_rerouted: weakref.WeakKeyDictionary[RTCDtlsTransport, list[StunProtocol]] = weakref.WeakKeyDictionary()


def check_receive_path() -> list[str]:
    """What this module needs from aiortc and aioice but does not find (empty when all is there)."""
    problems = []
    init = source_of(RTCRtpReceiver, "__init__")
    receive = source_of(RTCRtpReceiver, "receive")
    handler = source_of(RTCRtpReceiver, "_handle_rtp_packet")
    if "self.__decoder_queue: queue.Queue = queue.Queue()" not in init or "self.__decoder_queue," not in receive:
        problems.append("RTCRtpReceiver.__decoder_queue handed to its decoder thread")
    if "self.__decoder_queue.put((codec, encoded_frame))" not in handler:
        problems.append("RTCRtpReceiver._handle_rtp_packet queueing (codec, encoded_frame)")
    worker = inspect.getsource(decoder_worker)
    if "task = input_q.get()" not in worker or "if task is None:" not in worker:
        problems.append("aiortc decoder_worker ending on a None task")
    recv_next = source_of(RTCDtlsTransport, "_recv_next")
    if "data = self._rx_srtp.unprotect(data)" not in recv_next or "await self._handle_rtp_data(data, arrival_time_ms=arrival_time_ms)" not in recv_next:
        problems.append("RTCDtlsTransport._recv_next unprotecting SRTP for _handle_rtp_data")
    if "self.receiver.data_received(data, self.local_candidate.component)" not in source_of(StunProtocol, "datagram_received"):
        problems.append("aioice StunProtocol.datagram_received -> Connection.data_received")
    return problems


def source_of(owner: object, name: str) -> str:
    """The source of `owner.name`, or "" when it is not there (for the checks of aiortc's internals)."""
    member = getattr(owner, name, None)
    return inspect.getsource(member) if member is not None else ""


class InlineDecoder:
    """Stands in for a receiver's decoder queue: what aiortc's decoder thread did, done in `put`."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._decoder_key: tuple[str, int | None] | None = None
        self._decoder: Decoder | None = None
        self._pcm_decoder: libopus.OpusDecoder | None = None
        self._rate: int | None = None
        self._on_frame: OnFrame | None = None
        self._on_samples: OnSamples | None = None
        self._early: list[Task] = []
        self.closed = False
        self.frames = 0  # frames decoded
        self.decode_errors = 0

    @property
    def waiting(self) -> int:
        """Frames received while no pipeline was attached, kept (encoded) for the next one."""
        return len(self._early)

    def attach(self, on_frame: OnFrame | None, rate: int | None = None, on_samples: OnSamples | None = None) -> None:
        """Deliver frames to `on_frame` from now on (None: keep them), the ones kept so far first.

        rate: Opus decoded to mono at this rate (one libopus decodes at: 8, 12, 16, 24 or 48 kHz);
        None: the codec's own output, as aiortc decodes it (Opus: 48 kHz stereo).
        on_samples: takes what libopus decodes at `rate` instead of `on_frame`, as a mono int16 array of
        its own (no frame is made: a third of the per-frame cost beside the decoding).
        """
        self._on_frame = on_frame
        self._on_samples = on_samples if on_frame is not None else None
        self._rate = rate
        if on_frame is not None:
            early, self._early = self._early, []
            for task in early:
                self._decode(task)

    def get(self) -> None:
        """The decoder thread aiortc starts asks for its first task: none, so it ends at once."""
        return None

    def put(self, task: Task | None) -> None:
        if task is None:  # the receiver stopped: free the decoder (aiortc's thread dropped it as it ended)
            self.closed = True
            self._decoder = None
            if self._pcm_decoder is not None:
                self._pcm_decoder.close()
                self._pcm_decoder = None
            self._decoder_key = None
            self._early = []
            return
        if self.closed:
            return
        if self._on_frame is None:
            if len(self._early) < _MAX_EARLY_FRAMES:
                self._early.append(task)
            return
        self._decode(task)

    def _decode(self, task: Task) -> None:
        codec, encoded_frame = task
        if (codec.name, self._rate) != self._decoder_key:
            self._open(codec)
        samples: np.ndarray | None = None
        frames: list[av.AudioFrame] = []
        try:
            if self._pcm_decoder is not None:
                if not encoded_frame.data:
                    return  # libopus would conceal a lost packet; aiortc's decoder makes nothing of it
                pcm = self._pcm_decoder.decode(encoded_frame.data)
                if self._on_samples is not None:
                    samples = pcm.copy()  # the decoder's buffer is reused by the next packet
                else:
                    frames = [self._frame(pcm, encoded_frame.timestamp)]
            else:
                assert self._decoder is not None
                frames = self._decoder.decode(encoded_frame)  # type: ignore[assignment]
        except (av.FFmpegError, libopus.OpusError) as exc:
            # Keep the decoder state, as aiortc does: the next frames decode again.
            self.decode_errors += 1
            log.warning("RTCRtpReceiver(%s) failed to decode %s frame: %s", self._kind, codec.name, exc)
            return
        if samples is not None and self._on_samples is not None:
            self.frames += 1
            self._on_samples(samples)
            return
        for frame in frames:
            self.frames += 1
            if self._on_frame is not None:
                self._on_frame(frame)

    def _frame(self, pcm: np.ndarray, timestamp: int) -> av.AudioFrame:
        assert self._pcm_decoder is not None
        # What AudioFrame.from_ndarray does, without its checks and name lookups (half its cost).
        frame = av.AudioFrame(format=_S16, layout=_MONO, samples=pcm.size)
        frame.planes[0].update(pcm)
        frame.sample_rate = self._pcm_decoder.rate
        frame.pts = timestamp
        frame.time_base = _RTP_TIME_BASE
        return frame

    def _open(self, codec: RTCRtpCodecParameters) -> None:
        """A decoder for `codec` at the rate asked for: libopus's own for Opus, else aiortc's."""
        if self._pcm_decoder is not None:
            self._pcm_decoder.close()
        native = codec.name.lower() == "opus" and self._rate in libopus.RATES and libopus.available()
        self._pcm_decoder = libopus.OpusDecoder(self._rate, 1) if native else None  # type: ignore[arg-type]
        self._decoder = None if native else get_decoder(codec)
        self._decoder_key = (codec.name, self._rate)


def decode_inline(receiver: RTCRtpReceiver) -> InlineDecoder:
    """Decode `receiver`'s frames on the loop from now on; call before aiortc starts the receiver."""
    decoder = InlineDecoder(receiver.track.kind if receiver.track is not None else "audio")
    receiver._RTCRtpReceiver__decoder_queue = decoder  # type: ignore[attr-defined]
    original_receive = receiver.receive

    async def receive(parameters: Any) -> None:
        await original_receive(parameters)
        receive_datagrams_inline(receiver.transport)

    receiver.receive = receive  # type: ignore[method-assign]
    return decoder


def receive_datagrams_inline(dtls: RTCDtlsTransport) -> None:
    """SRTP datagrams of `dtls`'s ICE connection go straight to its RTP handling (idempotent)."""
    rerouted = _rerouted.setdefault(dtls, [])
    for protocol in dtls.transport._connection._protocols:
        if type(protocol) is StunProtocol and "datagram_received" not in protocol.__dict__:
            protocol.datagram_received = _srtp_first(dtls, protocol.datagram_received)  # type: ignore[method-assign]
            rerouted.append(protocol)


def _srtp_first(dtls: RTCDtlsTransport, usual: Callable[[bytes, tuple[Any, ...]], None]) -> Callable[[bytes, tuple[Any, ...]], None]:
    def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
        # What RTCDtlsTransport._recv_next does with an SRTP packet (RTCP excepted), here and now.
        if (
            len(data) > 1 and 127 < data[0] < 192 and not 192 <= data[1] <= 208
            and dtls._state is State.CONNECTED and dtls._rx_srtp is not None
        ):  # fmt: skip
            dtls._RTCDtlsTransport__rx_bytes += len(data)  # type: ignore[attr-defined]
            dtls._RTCDtlsTransport__rx_packets += 1  # type: ignore[attr-defined]
            arrival_time_ms = ntp_ms(time.time_ns())
            try:
                data = dtls._rx_srtp.unprotect(data)
            except pylibsrtp.Error:
                return
            run_now(dtls._handle_rtp_data(data, arrival_time_ms=arrival_time_ms))
        else:
            usual(data, addr)

    return datagram_received


def restore_receiver(receiver: RTCRtpReceiver) -> None:
    """Drop the per-call overrides once the peer connection is closed (they hold the call alive)."""
    receiver.__dict__.pop("receive", None)
    decoder = receiver.__dict__.get("_RTCRtpReceiver__decoder_queue")
    if isinstance(decoder, InlineDecoder):
        decoder.attach(None)
    for protocol in _rerouted.pop(receiver.transport, ()):
        protocol.__dict__.pop("datagram_received", None)


def run_now(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that normally never suspends to its end right here; should it suspend, a task
    finishes it (so nothing is lost, only delayed)."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return
    except Exception:
        log.exception("inbound RTP handling failed")
        return
    asyncio.ensure_future(_finish(coro, waiting))


async def _finish(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    while True:
        if isinstance(waiting, asyncio.Future):
            waiting._asyncio_future_blocking = False
            await asyncio.wait([waiting])
        else:
            await asyncio.sleep(0)  # a bare yield
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
