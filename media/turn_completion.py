"""Whether a transcript sounds like the speaker is done, or paused in the middle of a sentence.

Silence alone cannot tell "Hello, ... what time is it?" from "Hello." A turn whose words cannot end
an English sentence is given longer to go on (END_OF_TURN_UNFINISHED_MS more) before it is answered;
if the user speaks in that time, the parts are answered together as one question.

Signals, from the transcript Whisper punctuates:
- it ends on a comma, an ellipsis, a dash or a colon (Whisper marks trailing-off speech so);
- its last word cannot end a sentence: a conjunction, preposition, article or auxiliary;
- it ends on a verb that needs what follows ("tell me", "let me", "show me");
- it is only a discourse marker or a greeting ("So.", "Okay.", "Well,", "Let me think.", "Hello,").
"""

from __future__ import annotations

import re

_TRAILING_OFF = re.compile(r"(,|\.\.\.|…|-|—|:)\s*$")
_WORD = re.compile(r"[a-z']+")

_CANNOT_END = frozenset(
    "and but or nor so because since although though if when while whether than "
    "to of for with about from into onto at in on by like as "
    "the a an my your our their his her its this that these those some any every "
    "is are was were am be can could would will should shall may might must do does did "
    "have has had i we you he she they it's i'm".split()
)
_NEEDS_MORE = ("tell me", "let me", "show me", "give me", "ask you", "wondering", "i want", "i need", "i'd like")
_MARKERS = frozenset(
    "so okay ok well um uh hmm er ah oh now then hey hi hello listen look "
    "excuse me sorry let me think see actually basically anyway".split()
)


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("’", "'"))


def looks_unfinished(text: str) -> bool:
    """True when the transcript reads as the start of a sentence the speaker has not finished."""
    stripped = text.strip()
    words = words_of(stripped)
    if not words:
        return False
    if _TRAILING_OFF.search(stripped):
        return True
    if words[-1] in _CANNOT_END:
        return True
    tail = " ".join(words[-3:])
    if any(tail.endswith(phrase) for phrase in _NEEDS_MORE):
        return True
    return all(word in _MARKERS for word in words)
