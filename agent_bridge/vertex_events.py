"""Reading the ADK events of one reply: the text to speak and the tokens the model used.

An ADK agent on Agent Engine streams events (`content.parts[].text`, `usage_metadata`, `partial`).
With streaming mode "sse" each model response comes as partial events (pieces of text, running
usage) followed by one final event repeating the whole text; without it each response is one event.
Either way every piece of text is spoken once, and every model call is counted once.
"""

from __future__ import annotations

from typing import Any


class ReplyReader:
    """Fed a reply's events in order; `feed` returns the new text, `tokens` the usage so far."""

    def __init__(self) -> None:
        self._finished_calls = 0  # tokens of the model calls whose final event came
        self._current_call = 0  # running usage of the call still streaming partial events
        self._streamed_partials = False  # partial text went out since the last final event
        self._last_char = ""

    @property
    def tokens(self) -> int:
        return self._finished_calls + self._current_call

    def feed(self, event: dict[str, Any]) -> str:
        partial = event.get("partial") is True
        used = _total_tokens(event.get("usage_metadata") or event.get("usageMetadata"))
        if partial:
            self._current_call = max(self._current_call, used or 0)
        else:
            self._finished_calls += max(used or 0, self._current_call)
            self._current_call = 0
        text = _text_of(event)
        new_message = not self._streamed_partials
        if partial:
            self._streamed_partials = True
        elif self._streamed_partials:
            self._streamed_partials = False
            return ""  # the final event of a streamed response repeats what its partials said
        if not text:
            return ""
        if new_message and self._last_char and not self._last_char.isspace() and not text[0].isspace():
            text = " " + text  # two separate responses of the agent, not two pieces of one
        self._last_char = text[-1]
        return text


def _text_of(event: dict[str, Any]) -> str:
    content = event.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ""
    # Only spoken text: no tool calls or results, and not a thinking model's thoughts.
    return "".join(
        part["text"]
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought")
    )


def _total_tokens(usage: object) -> int | None:
    if not isinstance(usage, dict):
        return None

    def count(snake: str, camel: str) -> int:
        value = usage.get(snake, usage.get(camel))
        return value if isinstance(value, int) and value > 0 else 0

    total = count("total_token_count", "totalTokenCount")
    parts = count("prompt_token_count", "promptTokenCount") + count("candidates_token_count", "candidatesTokenCount")
    return max(total, parts)
