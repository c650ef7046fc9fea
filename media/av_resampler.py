"""libswresample through a one-thread filter graph: PyAV's AudioResampler without its thread pool.

`av.AudioResampler` builds an FFmpeg filter graph (abuffer -> aformat -> abuffersink) with the
graph's default `nb_threads = 0`, and FFmpeg answers "0" with a slice-thread pool of
cpu_count + 1 threads (cpu_count of them workers) made as soon as the first filter is added.
None of these audio filters can use slice threads, so every resampler carried idle native threads
for nothing, and they lived exactly as long as the resampler: a call's resamplers sit in the
call's reference cycles, so those threads were only joined at the next full garbage collection
and piled up across calls.

`AudioConverter` builds the very same graph (so its output is bit-identical to PyAV's) with
`threads = 1`, which FFmpeg takes as "run the filters on the caller's thread": no thread at all.
`close()` frees the graph at once instead of waiting for the collector.
"""

from __future__ import annotations

from errno import EAGAIN

import av
from av.filter import Graph


class AudioConverter:
    """Converts audio frames to `format`/`layout`/`rate`, like `av.AudioResampler`, on the caller's thread.

    `convert(frame)` returns the frames ready so far; `convert(None)` drains the converter's
    look-ahead (end of stream), after which it takes no more input. Every input frame must have
    the first frame's rate, format and layout.
    """

    def __init__(self, format: str, layout: str, rate: int) -> None:  # noqa: A002 (PyAV's names)
        self.format = av.AudioFormat(format)
        self.layout = av.AudioLayout(layout)
        self.rate = int(rate)
        self._graph: Graph | None = None
        self._source: tuple[str, str, int] | None = None
        self._passthrough = False
        self._closed = False

    def convert(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        if self._closed:
            raise ValueError("the converter is closed")
        if frame is None:
            if self._graph is None:
                return []
            graph = self._graph
            graph.push(None)
            out = self._pull(graph)
            self.close()
            return out
        source = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._source is None:
            self._source = source
            self._passthrough = source == (self.format.name, self.layout.name, self.rate)
            if not self._passthrough:
                self._graph = self._build(frame)
        elif source != self._source:
            raise ValueError(f"frame {source} does not match the converter's input {self._source}")
        if self._passthrough:
            return [frame]
        assert self._graph is not None
        self._graph.push(frame)
        return self._pull(self._graph)

    def close(self) -> None:
        """Free the filter graph now (idempotent); the converter takes no more frames."""
        self._closed = True
        self._graph = None

    def _build(self, frame: av.AudioFrame) -> Graph:
        graph = Graph()
        # Must be set before the first filter is added: that is when FFmpeg makes the pool.
        graph.threads = 1
        extra = {"time_base": str(frame.time_base)} if frame.time_base is not None else {}
        abuffer = graph.add(
            "abuffer",
            sample_rate=str(frame.sample_rate),
            sample_fmt=frame.format.name,
            channel_layout=frame.layout.name,
            **extra,
        )
        aformat = graph.add(
            "aformat",
            sample_rates=str(self.rate),
            sample_fmts=self.format.name,
            channel_layouts=self.layout.name,
        )
        sink = graph.add("abuffersink")
        abuffer.link_to(aformat)
        aformat.link_to(sink)
        graph.configure()
        return graph

    @staticmethod
    def _pull(graph: Graph) -> list[av.AudioFrame]:
        out: list[av.AudioFrame] = []
        while True:
            try:
                out.append(graph.pull())
            except EOFError:
                return out
            except av.FFmpegError as exc:
                if exc.errno != EAGAIN:
                    raise
                return out
