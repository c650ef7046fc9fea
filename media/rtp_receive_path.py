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
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import av
import pylibsrtp
from aioice.ice import StunProtocol
from aiortc import RTCRtpReceiver, clock
from aiortc.codecs import get_decoder
from aiortc.codecs.base import Decoder
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import decoder_worker

log = logging.getLogger(__name__)

OnFrame = Callable[[av.AudioFrame], None]
# Frames decoded before the call's pipeline is attached are kept (aiortc's track queue kept them too).
_MAX_EARLY_FRAMES = 250

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
        self._codec_name: str | None = None
        self._decoder: Decoder | None = None
        self._on_frame: OnFrame | None = None
        self._early: list[av.AudioFrame] = []
        self.closed = False
        self.frames = 0
        self.decode_errors = 0

    def attach(self, on_frame: OnFrame | None) -> None:
        """Deliver frames to `on_frame` from now on (None: drop them), the ones kept so far first."""
        self._on_frame = on_frame
        early, self._early = self._early, []
        if on_frame is not None:
            for frame in early:
                on_frame(frame)

    def get(self) -> None:
        """The decoder thread aiortc starts asks for its first task: none, so it ends at once."""
        return None

    def put(self, task: tuple[RTCRtpCodecParameters, JitterFrame] | None) -> None:
        if task is None:  # the receiver stopped: free the decoder (aiortc's thread dropped it as it ended)
            self.closed = True
            self._decoder = None
            self._early = []
            return
        if self.closed:
            return
        codec, encoded_frame = task
        if codec.name != self._codec_name:
            self._decoder = get_decoder(codec)
            self._codec_name = codec.name
        assert self._decoder is not None
        try:
            frames = self._decoder.decode(encoded_frame)
        except av.FFmpegError as exc:
            # Keep the decoder state, as aiortc does: the next frames decode again.
            self.decode_errors += 1
            log.warning("RTCRtpReceiver(%s) failed to decode %s frame: %s", self._kind, codec.name, exc)
            return
        for frame in frames:
            self.frames += 1
            if self._on_frame is not None:
                self._on_frame(frame)  # type: ignore[arg-type]
            elif len(self._early) < _MAX_EARLY_FRAMES:
                self._early.append(frame)  # type: ignore[arg-type]


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
            arrival_time_ms = clock.current_ms()
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
