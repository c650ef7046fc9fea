"""The voice loop of one call: listen, detect the end of the turn, transcribe, reply, speak, yield to barge-in.

Runs on the event loop. The per-frame work (resample, VAD, turn detection) costs tens of
microseconds; STT, the agent and TTS run in their engines' own threads or sockets.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import av
import numpy as np

from agent_bridge.interfaces import Transcript
from agent_bridge.registry import Engines
from media.agent_sessions import AgentSessionStore, start_call_conversation
from media.audio_resample import VAD_RATE, InboundResampler
from media.bot_replies import BotReplies
from media.conversation_log import ConversationLog, MessageStore
from media.echo_gate import EchoGate
from media.engine_fallback import CallEngines, SessionVoiceStore
from media.pipeline import CallPipeline, ChatTurn, PipelineContext
from media.preroll import PrerollBuffer
from media.reply_ahead import ReplyAhead
from media.stt_feed import SttFeed
from media.turn_completion import looks_unfinished
from media.turn_detector import TurnConfig, TurnDetector, TurnEvent, TurnEventType
from media.turn_metrics import TurnTimer
from media.utterance_join import UtteranceJoin
from media.vad import WINDOW_MS, WINDOW_SAMPLES
from media.vad_batch import BatchedVad

log = logging.getLogger(__name__)

# Speech is confirmed ~130 ms after it starts; hand STT a little more than that from before.
_PREROLL_MS = 500


class VoicePipeline(CallPipeline):
    inbound_rate = VAD_RATE  # Opus decoded straight to 16 kHz mono: the resampler only passes it on

    def __init__(
        self,
        context: PipelineContext,
        engines: Engines,
        turn_config: TurnConfig,
        agent_store: AgentSessionStore | None = None,
        message_store: MessageStore | None = None,
        voice_store: SessionVoiceStore | None = None,
    ) -> None:
        self._ctx = context
        self._voice_store = voice_store  # the session's chosen TTS voice, read at call start
        self._speech = context.speech_out
        self._resampler = InboundResampler(VAD_RATE)
        # Run with every other call's windows (media.vad_batch); a quiet line costs no model runs.
        self._vad = BatchedVad(self._on_window, skip_quiet=True)
        self._echo = EchoGate()
        context.audio_out.sent_listeners.append(self._echo.on_sent)
        self._turns = TurnDetector(turn_config)
        self._preroll = PrerollBuffer(VAD_RATE * _PREROLL_MS // 1000)
        self._use = CallEngines(engines, context.session_id, context.user_id, self._on_interim)
        self._agent_store = agent_store
        self._feed = SttFeed(lambda pcm: self._use.stt.push(pcm))
        # Transcripts of the turns of an utterance still going on (cut turns), answered as one.
        self._said: list[asyncio.Task[Transcript | None]] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self._join = UtteranceJoin()
        self._log = ConversationLog(message_store, context.session_id)
        # Where the utterance being spoken began (media clock), kept while later turns join it.
        self._utterance_start_ms = 0.0
        self._replies = BotReplies(
            self._use, self._speech, context.events, self._publish_error,
            on_barge_in=lambda: self._join.reply_interrupted(asyncio.get_running_loop().time()),
            log=self._log,
        )  # fmt: skip
        self._ahead: ReplyAhead | None = None  # the reply drafted during the current pause
        self._pauses = 0  # pauses so far: a draft belongs to the pause it was started in

    # -- inbound -----------------------------------------------------------------------------

    def on_audio_frame(self, frame: av.AudioFrame) -> None:
        self._on_pcm(self._resampler.resample(frame))

    def on_audio_samples(self, samples: np.ndarray) -> None:
        self._on_pcm(self._resampler.native(samples))

    def _on_pcm(self, pcm: np.ndarray) -> None:
        """16 kHz mono int16 of the caller: to the preroll, STT while a turn is on, and the VAD."""
        if not pcm.size:
            return
        self._preroll.push(pcm)
        self._feed.hear(pcm)
        # Echo is judged on the chunk that completes a window, against what was just sent.
        completes = self._vad.pending_samples + pcm.size >= WINDOW_SAMPLES
        self._vad.push(pcm, completes and self._echo.is_echo(pcm))

    def _on_window(self, index: int, probability: float, echo: bool) -> None:
        """One VAD window's probability, as the batch gives it back (at most ~10 ms after it was heard)."""
        if echo:
            probability = 0.0  # the bot's own voice: never a turn of the user's
        for event in self._turns.push_probability(probability, WINDOW_MS, (index + 1) * WINDOW_MS):
            self._on_turn_event(event)

    def _on_turn_event(self, event: TurnEvent) -> None:
        if event.type is TurnEventType.SPEECH_STARTED:
            self._drop_ahead()
            if not event.cut:
                # Spoke on before the last utterance's answer began: it joins this one.
                self._said = self._join.speech_started() + self._said
            if self._replies.active:
                self._replies.interrupt("barge_in")
            if event.cut:
                # The caller spoke on through a cut: this turn's audio goes on from where the last stopped.
                start = self._feed.fed_until
            else:
                self._ctx.events.publish("user_speaking", speaking=True)
                if not self._said and not self._join.carried:  # else it goes on an utterance begun earlier
                    self._utterance_start_ms = event.speech_start_ms
                start = int((event.speech_start_ms - 100) * VAD_RATE / 1000)
            self._feed.start_turn(self._preroll.since(start).tobytes())
        elif event.type is TurnEventType.SPEECH_PAUSED:
            self._feed.pause()
            self._pauses += 1
            if not self._feed.closing:  # a pass now would be of the turn still closing
                self._use.stt.speech_paused()
                if self._use.tts.discard_is_free:  # else nothing may be spoken ahead
                    self._spawn(self._draft_reply(self._pauses))
        elif event.type is TurnEventType.SPEECH_RESUMED:
            self._drop_ahead()
            self._use.stt.speech_resumed()
            self._feed.resume()
        elif event.type is TurnEventType.TURN_ENDED:
            carry = self._feed.end_turn(self._preroll.end_sample)
            self._said.append(self._spawn(self._transcribe_turn(carry)))
            if event.cut:
                self._drop_ahead()
                return  # the utterance may go on: it is answered once it ends
            self._ctx.events.publish("user_speaking", speaking=False)
            said, self._said = self._said, []
            turn_ms = (round(self._utterance_start_ms), round(event.speech_end_ms))
            self._join.answering(self._spawn(self._answer(said, self._wall_time_of(event.speech_end_ms), turn_ms)), said)

    def _wall_time_of(self, media_ms: float) -> float:
        """Map a moment of the inbound audio clock to loop time: the newest sample arrived just now."""
        newest_ms = self._preroll.end_sample * 1000 / VAD_RATE
        return asyncio.get_running_loop().time() - (newest_ms - media_ms) / 1000

    async def _draft_reply(self, pause: int) -> None:
        """Write and speak the reply to the turn so far, unheard, while the pause may yet end the turn."""
        try:
            text = await self._use.stt.paused_transcript()
        except Exception:  # the turn's own pass will report it
            return
        if not text or pause != self._pauses or not self._feed.paused:
            return  # speech resumed, or the turn already ended
        earlier = self._earlier_texts()
        if earlier is None:
            return  # an earlier part of the question is still being transcribed
        text = " ".join([*earlier, text])  # as _answer will join them
        draft = self._use.conversation.speculate(text)
        if draft is not None:
            self._drop_ahead()
            self._ahead = ReplyAhead(text, draft, self._use.tts, self._speech)

    def _earlier_texts(self) -> list[str] | None:
        """What _answer would put before this turn's transcript; None while any of it is not known yet."""
        if not all(task.done() for task in self._said):
            return None
        return self._join.carried + _heard(self._said)

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.discard()
            self._ahead = None

    def _on_interim(self, transcript: Transcript) -> None:
        self._ctx.events.publish("transcript", text=transcript.text, final=False)

    async def _transcribe_turn(self, carry: list[bytes]) -> Transcript | None:
        """Close the STT turn: `carry` is this turn's audio that was kept while an earlier one closed."""
        for pcm in carry:
            self._use.stt.push(pcm)
        self._feed.turn_closed()
        try:
            return await self._use.stt.finish_turn()  # it takes the turn's audio before it first waits
        except Exception as exc:
            self._publish_error("stt_failed", exc)
            return None

    async def _answer(self, said: list[asyncio.Task[Transcript | None]], end_of_speech: float, turn_ms: tuple[int, int]) -> None:
        """Reply to an utterance: the transcripts of its turns, one, or several if it was cut."""
        timer = TurnTimer(end_of_speech=end_of_speech)
        # asyncio.wait, not gather: if this answer is dropped (the user spoke on), the transcripts live on.
        if said:
            await asyncio.wait(said)
        texts = self._join.take_carried() + _heard(said)
        if not texts:
            return
        text = " ".join(texts)
        timer.transcript_ready = asyncio.get_running_loop().time()
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not ahead.usable_for(text):
            ahead.discard()
            ahead = None
        if looks_unfinished(text):
            # "Hello, ..." may go on: if the user speaks in this time, this answer is dropped and its
            # transcripts join the next turn's (UtteranceJoin).
            try:
                await asyncio.sleep(self._turns.config.unfinished_hold_ms / 1000)
            except asyncio.CancelledError:
                if ahead is not None:
                    ahead.discard()
                raise
        self._ctx.events.publish("transcript", text=text, final=True)
        self._log.user_turn(text, "voice", turn_start_ms=turn_ms[0], turn_end_ms=turn_ms[1])
        self._join.reply_started(text, end_of_speech)
        await self._replies.reply(text, timer, ahead=ahead)

    # -- text chat ---------------------------------------------------------------------------

    async def handle_text(self, text: str) -> str:
        return (await self.handle_chat(text, speak=True)).reply

    async def handle_chat(self, text: str, *, speak: bool) -> ChatTurn:
        self._ctx.events.publish("transcript", text=text, final=True, source="chat")
        user = self._log.user_turn(text, "text")
        self._join.reply_started(text, None)
        now = asyncio.get_running_loop().time()
        answer = await self._replies.answer(text, TurnTimer(end_of_speech=None, transcript_ready=now), speak=speak)
        await self._log.flush()  # whoever asked reads the history next: both messages are in it
        return ChatTurn(answer.text, user, answer.message, spoken=speak)

    async def speak(self, text: str) -> str:
        """Say `text` word for word (the avatar's speak endpoint): a reply without the agent."""
        self._join.reply_started(text, None)
        now = asyncio.get_running_loop().time()
        return await self._replies.reply(text, TurnTimer(end_of_speech=None, transcript_ready=now), scripted=True)

    # -- plumbing ----------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        return {
            "voice_activity": self._turns.speech_ms * 1000,
            "stt_audio": self._use.stt_ms * 1000,
            # A live reply's characters count as they go to TTS, so quota is checked within the reply.
            "tts_characters": self._replies.tts_characters,
            "agent_tokens": self._use.agent_tokens,
        }

    def _publish_error(self, code: str, exc: BaseException) -> None:
        log.warning("call %s: %s: %s", self._ctx.session_id, code, exc)
        self._ctx.events.publish("error", code=code, message=str(exc) or type(exc).__name__)
        engine = self._use.fall_back(code)  # ENGINE_FALLBACK=offline: later turns use the offline engine
        if engine is not None:
            self._ctx.events.publish("engine_fallback", kind=code.removesuffix("_failed"), engine=engine)

    def _spawn(self, coro):  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> None:
        # The agent's session is made in the background: the answer to the offer does not wait for it.
        self._spawn(self._start_agent())
        if self._voice_store is not None:
            self._spawn(self._take_voice(self._voice_store))

    async def _take_voice(self, store: SessionVoiceStore) -> None:
        """The session's voice (chosen when it was made) for every reply: read once, long before the first."""
        try:
            voice_id = await store.voice_of(uuid.UUID(self._ctx.session_id))
        except Exception:  # the call speaks in the engine's own voice
            log.warning("call %s: reading its voice failed", self._ctx.session_id, exc_info=True)
            return
        if voice_id is not None and not self._use.use_voice(voice_id):
            log.info("call %s: the TTS has no voice %r; it speaks in its own", self._ctx.session_id, voice_id)

    async def _start_agent(self) -> None:
        try:
            await start_call_conversation(self._use.conversation, self._agent_store, uuid.UUID(self._ctx.session_id))
        except Exception as exc:
            self._publish_error("agent_failed", exc)

    async def stop(self) -> None:
        self._vad.close()
        self._drop_ahead()
        if self._echo.on_sent in self._ctx.audio_out.sent_listeners:
            self._ctx.audio_out.sent_listeners.remove(self._echo.on_sent)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._replies.aclose()
        await self._log.aclose()  # after the replies: a reply cut by the hang-up is written as heard
        await self._use.aclose()


def _heard(said: list[asyncio.Task[Transcript | None]]) -> list[str]:
    """The texts of the finished transcriptions that heard something (failed or dropped ones say nothing)."""
    transcripts = [t.result() for t in said if t.done() and not t.cancelled() and t.exception() is None]
    return [t.text for t in transcripts if t is not None]
