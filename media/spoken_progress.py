"""How much of one reply's text has been heard, read from how far its audio has been sent.

The speaker tells this which sentence goes to TTS and where each chunk of its audio was queued; marks
on the speech output (`when_sent`) then say, as frames leave, which sentence the listener has reached
and how far into its audio. A sentence whose audio has all been sent counts whole. Within the
sentence being heard, the characters are estimated from the share of its audio sent (speech is taken
to run at an even pace through the sentence) and cut back to a word boundary.

Precision: sentences are exact to the frame (20 ms). Inside a sentence the estimate is to the last
mark passed (one every ~200 ms of audio), and off by however unevenly the voice spoke through the
sentence (and by its trailing silence), so about a word or two. What the listener heard is what left this
server: network and jitter-buffer delay after that are not seen.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from media.speech_output import SpeechOutput

# A mark every 200 ms of 48 kHz audio: a few per sentence, each a tuple in the output's mark list.
_MARK_STEP = 48_000 // 5


@dataclass
class _Sentence:
    start: int  # its place in the reply's text
    end: int
    samples: int = 0  # audio queued for it so far


class SpokenProgress:
    def __init__(self, output: SpeechOutput) -> None:
        self._out = output
        self._parts: list[str] = []
        self._sentences: list[_Sentence] = []
        self._cursor = 0  # where the next sentence is looked for in the text
        self._heard = (0, 0)  # (sentence index, samples of it sent): the furthest point reached

    # -- what the speaker reports ------------------------------------------------------------

    def add_text(self, delta: str) -> None:
        self._parts.append(delta)

    def sentence(self, sentence: str) -> None:
        """`sentence` (a stripped piece of the text, in order) goes to TTS now."""
        text = self.text
        start = text.find(sentence, self._cursor)
        if start < 0:  # cannot happen with SentenceSplitter's pieces; keep the count going anyway
            start = self._cursor
        end = min(len(text), start + len(sentence))
        self._sentences.append(_Sentence(start, end))
        self._cursor = end

    def audio_queued(self, position: int, samples: int) -> None:
        """Audio of the current sentence was queued at `position` of the output."""
        if not self._sentences or samples <= 0:
            return
        index = len(self._sentences) - 1
        sentence = self._sentences[index]
        offset, sentence.samples = sentence.samples, sentence.samples + samples
        # A drafted reply's held positions count down (-1 - index): its later samples are lower.
        direction = 1 if position >= 0 else -1
        for step in range(0, samples, _MARK_STEP):
            self._out.when_sent(position + direction * step, functools.partial(self._reached, index, offset + step))

    def all_heard(self) -> None:
        """Everything queued has been sent (the output drained)."""
        self._heard = (len(self._sentences), 0)

    def _reached(self, index: int, offset: int) -> None:
        # Runs inside the 20 ms frame send: a comparison and a store, nothing more.
        self._heard = max(self._heard, (index, offset))

    # -- what it comes to --------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The reply's text as generated so far, unstripped."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def generated(self) -> str:
        return self.text.strip()

    @property
    def spoken(self) -> str:
        """The beginning of the text that was heard (see the module's doc for how exact it is)."""
        index, offset = self._heard
        end = 0
        for sentence in self._sentences[:index]:
            if sentence.samples:
                end = sentence.end
        if index < len(self._sentences) and offset > 0:
            current = self._sentences[index]
            piece = self.text[current.start : current.end]
            estimate = len(piece) * offset // max(current.samples, 1)
            if estimate >= len(piece):
                end = current.end
            else:
                cut = piece.rfind(" ", 0, estimate + 1)  # no half words
                if cut > 0:
                    end = current.start + cut
        return self.text[:end].strip()
