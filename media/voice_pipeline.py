"""The voice loop of one call: listen, detect the end of the turn, transcribe, reply, speak, yield to barge-in.

Runs on the event loop. The per-frame work (resample, VAD, turn detection) costs tens of
microseconds; STT, the agent and TTS run in their engines' own threads or sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import av

from agent_bridge.interfaces import Transcript
from agent_bridge.registry import Engines
from media.agent_sessions import AgentSessionStore, start_call_conversation
from media.audio_resample import VAD_RATE, InboundResampler
from media.engine_fallback import CallEngines
from media.pipeline import CallPipeline, PipelineContext
from media.preroll import PrerollBuffer
from media.reply_ahead import ReplyAhead
from media.reply_speaker import ReplySpeaker
from media.turn_completion import looks_unfinished
from media.turn_detector import TurnConfig, TurnDetector, TurnEvent, TurnEventType
from media.turn_metrics import TurnTimer
from media.utterance_join import UtteranceJoin
from media.vad import WINDOW_MS, SileroVad

log = logging.getLogger(__name__)

# Speech is confirmed ~130 ms after it starts; hand STT a little more than that from before.
_PREROLL_MS = 500


class VoicePipeline(CallPipeline):
    def __init__(
        self,
        context: PipelineContext,
        engines: Engines,
        turn_config: TurnConfig,
        agent_store: AgentSessionStore | None = None,
    ) -> None:
        self._ctx = context
        self._speech = context.speech_out
        self._resampler = InboundResampler(VAD_RATE)
        self._vad = SileroVad()
        self._turns = TurnDetector(turn_config)
        self._preroll = PrerollBuffer(VAD_RATE * _PREROLL_MS // 1000)
        self._use = CallEngines(engines, context.session_id, context.user_id, self._on_interim)
        self._agent_store = agent_store
        self._feeding_stt = False
        # Audio of a pause, held back so a speculative STT pass started at the pause stays exact;
        # given to STT only if speech resumes.
        self._held: list[bytes] = []
        self._paused = False
        # Ended turns whose finish_turn has not begun yet, and the audio of the next turn kept until it
        # has: finish_turn takes the audio pushed before it, so nothing later may reach STT first.
        self._closing_turns = 0
        self._next_turn_audio: list[bytes] = []
        # A turn cut at max_turn_ms ends where STT was fed up to; the next turn's audio starts there.
        self._stt_fed_until = 0
        # Transcripts of the turns of an utterance still going on (cut turns), answered as one.
        self._said: list[asyncio.Task[Transcript | None]] = []
        self._reply_task: asyncio.Task[str] | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._bot_speaking = False
        self._turn_count = 0
        self._tts_characters = 0  # of finished replies
        self._speaking: set[ReplySpeaker] = set()  # replies still being spoken
        self._join = UtteranceJoin()
        self._ahead: ReplyAhead | None = None  # the reply drafted during the current pause
        self._pauses = 0  # pauses so far: a draft belongs to the pause it was started in

    # -- inbound -----------------------------------------------------------------------------

    def on_audio_frame(self, frame: av.AudioFrame) -> None:
        pcm = self._resampler.resample(frame)
        if not pcm.size:
            return
        self._preroll.push(pcm)
        if self._feeding_stt:
            if self._paused:
                self._held.append(pcm.tobytes())
            else:
                self._push_stt(pcm.tobytes())
        probabilities = self._vad.process(pcm)
        if not probabilities.size:
            return
        first_window = self._vad.windows - probabilities.size
        for offset, probability in enumerate(probabilities):
            window_end_ms = (first_window + offset + 1) * WINDOW_MS
            for event in self._turns.push_probability(float(probability), WINDOW_MS, window_end_ms):
                self._on_turn_event(event)

    def _on_turn_event(self, event: TurnEvent) -> None:
        if event.type is TurnEventType.SPEECH_STARTED:
            self._drop_ahead()
            if not event.cut:
                # Spoke on before the last utterance's answer began: it joins this one.
                self._said = self._join.speech_started() + self._said
            if self._reply_active():
                self._interrupt("barge_in")
            if event.cut:
                # The caller spoke on through a cut: this turn's audio goes on from where the last stopped.
                start = self._stt_fed_until
            else:
                self._ctx.events.publish("user_speaking", speaking=True)
                start = int((event.speech_start_ms - 100) * VAD_RATE / 1000)
            self._push_stt(self._preroll.since(start).tobytes())
            self._feeding_stt = True
            self._paused = False
        elif event.type is TurnEventType.SPEECH_PAUSED:
            self._paused = True
            self._pauses += 1
            if not self._closing_turns:  # a pass now would be of the turn still closing
                self._use.stt.speech_paused()
                if not self._said and not self._join.has_carried:  # else the question is more than this turn
                    self._spawn(self._draft_reply(self._pauses))
        elif event.type is TurnEventType.SPEECH_RESUMED:
            self._paused = False
            self._drop_ahead()
            self._use.stt.speech_resumed()
            for pcm in self._held:
                self._push_stt(pcm)
            self._held.clear()
        elif event.type is TurnEventType.TURN_ENDED:
            self._feeding_stt = False
            self._paused = False
            self._held.clear()
            self._stt_fed_until = self._preroll.end_sample
            carry, self._next_turn_audio = self._next_turn_audio, []
            self._closing_turns += 1
            self._said.append(self._spawn(self._transcribe_turn(carry)))
            if event.cut:
                self._drop_ahead()
                return  # the utterance may go on: it is answered once it ends
            self._ctx.events.publish("user_speaking", speaking=False)
            said, self._said = self._said, []
            self._join.answering(self._spawn(self._answer(said, self._wall_time_of(event.speech_end_ms))), said)

    def _push_stt(self, pcm: bytes) -> None:
        if self._closing_turns:
            self._next_turn_audio.append(pcm)
            return
        for held in self._next_turn_audio:
            self._use.stt.push(held)
        self._next_turn_audio.clear()
        self._use.stt.push(pcm)

    def _wall_time_of(self, media_ms: float) -> float:
        """Map a moment of the inbound audio clock to loop time: the newest sample arrived just now."""
        newest_ms = self._preroll.end_sample * 1000 / VAD_RATE
        return asyncio.get_running_loop().time() - (newest_ms - media_ms) / 1000

    async def _draft_reply(self, pause: int) -> None:
        """Write and speak the reply to the turn so far, unheard, while the pause may yet end the turn."""
        if not self._use.tts.discard_is_free:
            return
        try:
            text = await self._use.stt.paused_transcript()
        except Exception:  # the turn's own pass will report it
            return
        if not text or pause != self._pauses or not self._paused:
            return  # speech resumed, or the turn already ended
        draft = self._use.conversation.speculate(text)
        if draft is not None:
            self._drop_ahead()
            self._ahead = ReplyAhead(text, draft, self._use.tts, self._speech)

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
        self._closing_turns -= 1
        try:
            return await self._use.stt.finish_turn()  # it takes the turn's audio before it first waits
        except Exception as exc:
            self._publish_error("stt_failed", exc)
            return None

    async def _answer(self, said: list[asyncio.Task[Transcript | None]], end_of_speech: float) -> None:
        """Reply to an utterance: the transcripts of its turns, one, or several if it was cut."""
        timer = TurnTimer(end_of_speech=end_of_speech)
        # asyncio.wait, not gather: if this answer is dropped (the user spoke on), the transcripts live on.
        if said:
            await asyncio.wait(said)
        heard = [t.result() for t in said if not t.cancelled() and t.exception() is None]
        texts = self._join.take_carried() + [t.text for t in heard if t is not None]
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
        self._join.reply_started(text, end_of_speech)
        await self._start_reply(text, timer, ahead=ahead)

    # -- text chat ---------------------------------------------------------------------------

    async def handle_text(self, text: str) -> str:
        self._ctx.events.publish("transcript", text=text, final=True, source="chat")
        self._join.reply_started(text, None)
        now = asyncio.get_running_loop().time()
        return await self._start_reply(text, TurnTimer(end_of_speech=None, transcript_ready=now))

    async def speak(self, text: str) -> str:
        """Say `text` word for word (the avatar's speak endpoint): a reply without the agent."""
        self._join.reply_started(text, None)
        now = asyncio.get_running_loop().time()
        return await self._start_reply(text, TurnTimer(end_of_speech=None, transcript_ready=now), scripted=True)

    # -- outbound ----------------------------------------------------------------------------

    async def _start_reply(
        self, text: str, timer: TurnTimer, *, scripted: bool = False, ahead: ReplyAhead | None = None
    ) -> str:
        if self._reply_active():
            self._interrupt("new_turn")
        self._turn_count += 1
        task = asyncio.ensure_future(self._reply(text, timer, self._turn_count, scripted=scripted, ahead=ahead))
        self._reply_task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                return ""  # interrupted by the user: what was said is gone
            raise

    async def _reply(
        self, text: str, timer: TurnTimer, turn: int, *, scripted: bool = False, ahead: ReplyAhead | None = None
    ) -> str:
        loop = asyncio.get_running_loop()
        asked = timer
        if ahead is not None:
            timer = ahead.timer  # its TTS was asked for before the turn ended: its stages say so

        def first_frame_sent() -> None:
            timer.first_frame_sent = loop.time()
            self._set_bot_speaking(True)
            self._ctx.events.publish("turn_metrics", turn=turn, drafted=ahead is not None, **timer.as_event())

        if ahead is not None:
            speaker = ahead.speaker
        else:
            speaker = ReplySpeaker(
                self._use.tts, self._speech, self._ctx.events, timer, first_frame_sent, self._publish_error
            )
        self._speaking.add(speaker)
        try:
            if ahead is not None:
                reply = await ahead.adopt(asked, self._ctx.events, first_frame_sent)
            else:
                # Closed at once when the reply is cancelled (barge-in), so a cloud agent's stream ends with it.
                source = _said_as_is(text) if scripted else self._use.conversation.reply(text)
                async with contextlib.aclosing(source) as deltas:
                    reply = await speaker.speak(deltas)
        finally:
            self._speaking.discard(speaker)
            self._tts_characters += speaker.characters_synthesized
        self._speech.end_of_reply()
        self._speech.when_drained(lambda: self._set_bot_speaking(False))
        return reply

    def _reply_active(self) -> bool:
        running = self._reply_task is not None and not self._reply_task.done()
        return running or self._speech.queued_samples > 0

    def _interrupt(self, reason: str) -> None:
        """Stop the bot at once: unsent audio is dropped within the frame, agent and TTS cancelled."""
        dropped = self._speech.flush()
        if self._reply_task is not None and not self._reply_task.done():
            self._reply_task.cancel()
        if reason == "barge_in":
            self._join.reply_interrupted(asyncio.get_running_loop().time())
        self._set_bot_speaking(False)
        self._ctx.events.publish("interrupted", reason=reason, dropped_ms=dropped * 1000 // 48_000)

    def _set_bot_speaking(self, speaking: bool) -> None:
        if speaking != self._bot_speaking:
            self._bot_speaking = speaking
            self._ctx.events.publish("bot_speaking", speaking=speaking)

    # -- plumbing ----------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        return {
            "voice_activity": self._turns.speech_ms * 1000,
            "stt_audio": self._use.stt_ms * 1000,
            # A live reply's characters count as they go to TTS, so quota is checked within the reply.
            "tts_characters": self._tts_characters + sum(s.characters_synthesized for s in self._speaking),
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

    async def _start_agent(self) -> None:
        try:
            await start_call_conversation(self._use.conversation, self._agent_store, uuid.UUID(self._ctx.session_id))
        except Exception as exc:
            self._publish_error("agent_failed", exc)

    async def stop(self) -> None:
        self._drop_ahead()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._use.aclose()


async def _said_as_is(text: str) -> AsyncIterator[str]:
    """A scripted reply: the text itself, as the agent's one delta."""
    yield text
