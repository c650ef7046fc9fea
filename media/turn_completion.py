"""Whether a transcript sounds like the speaker is done, or paused in the middle of a sentence.

Silence alone cannot tell "Hello, ... what time is it?" from "Hello." A turn whose words cannot end
an English sentence is given longer to go on (END_OF_TURN_UNFINISHED_MS more) before it is answered;
if the user speaks in that time, the parts are answered together as one question.

Signals, from the transcript Whisper punctuates:
- it ends on a comma, an ellipsis, a dash or a colon (Whisper marks trailing-off speech so);
- its last word cannot end a sentence: a conjunction, an article, "to", a contraction like "I'm"; or a
  preposition, outside a question ("What is it about?" is whole);
- it ends on a verb that needs what follows ("tell me", "let me", "show me");
- it is only a discourse marker or a greeting ("So.", "Okay.", "Well,", "Let me think.", "Hello,").
"""

from __future__ import annotations

import re

_TRAILING_OFF = re.compile(r"(,|\.\.\.|…|-|—|:)\s*$")
_WORD = re.compile(r"[a-z']+")

_CANNOT_END = frozenset(
    "and but or nor so because although though if whether than "
    "the a an my your our their every "
    "to i it's i'm i've i'd we're you're they're".split()
)
# Can end a question ("What is it about?") but not a statement.
_PREPOSITIONS = frozenset("of for with about from into onto at in on by like as".split())
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
    if words[-1] in _PREPOSITIONS and not stripped.endswith("?"):
        return True
    tail = " ".join(words[-3:])
    if any(tail.endswith(phrase) for phrase in _NEEDS_MORE):
        return True
    return all(word in _MARKERS for word in words)
