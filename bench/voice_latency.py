"""Voice-to-voice latency, measured at the client, on speech the server's own TTS did not make.

Against a real server process (PIPELINE=voice) over WebRTC, with aiortc clients:
- turns: questions by Piper and by espeak-ng (several voices, speeds, and pauses inside sentences);
  voice-to-voice is from the moment the frame holding the question's last voiced sample was sent to the
  arrival of the first reply frame with speech in it. The server's own turn_metrics figure is shown alongside.
- fragments: questions that got more than one reply, or a reply that began before the question ended.
- barge-in: from the first voiced sample of the user's speech over a long reply to the last bot frame with
  speech received; and noise, a click, silence and the bot's own echoed voice, which must not interrupt it.
- N calls at once: voice-to-voice when their questions end at the same moment.

`--engines offline` (the default): Whisper, the local agent and Piper. `--engines cloud-fakes`: Google STT,
Vertex AI Agent Engine and Google TTS, each pointed at its local fake (tests/fakes/); the speech carries marker
tones the STT fake hears as words. Needs espeak-ng (apt-get install espeak-ng).
Usage: python bench/voice_latency.py [--turns 5] [--sets piper,pauses] [--concurrent 4] [--engines cloud-fakes]
With VOICE_LATENCY_STAGES=1 each turn also prints the server's stages (stt_ms, agent_first_text_ms, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import speech_sets  # noqa: E402
from bench.barge_in import FALSE_CHECKS, BargeResult, FalseCheck, barge_in_trial, false_barge_in_check  # noqa: E402
from bench.cloud_fakes import cloud_fakes, marked  # noqa: E402
from bench.server_process import server_process  # noqa: E402
from bench.speech_sets import Question  # noqa: E402
from bench.voice_call import BenchCall, TurnResult  # noqa: E402


@dataclass
class Args:
    turns: int
    end_of_turn_ms: int
    engines: str
    sets: list[str]
    concurrent: int
    rounds: int
    barge_ins: int


@dataclass
class Results:
    turns: list[TurnResult] = field(default_factory=list)
    together: list[TurnResult] = field(default_factory=list)
    barges: list[BargeResult] = field(default_factory=list)
    checks: list[FalseCheck] = field(default_factory=list)


def percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(sorted(values), n=100, method="inclusive")[q - 1]


def turn_line(label: str, r: TurnResult) -> str:
    client = "  none" if r.client_ms is None else f"{r.client_ms:6.0f}"
    wire = "  none" if r.wire_ms is None else f"{r.wire_ms:6.0f}"
    server = "  none" if r.server_ms is None else f"{r.server_ms:6d}"
    flags = ("early " if r.early else "") + (f"{r.replies} replies" if r.replies != 1 else "")
    q = r.question
    return (f"{label:>8} {q.set_name:13} {q.voice:24} {q.seconds:4.1f}s client {client} wire {wire} server {server}"
            f" {flags:16} {r.heard!r}")  # fmt: skip


async def token_for(http: aiohttp.ClientSession, base_url: str, user: str) -> str:
    async with http.post(f"{base_url}/dev/token", json={"user_id": user}) as resp:
        return str((await resp.json())["access_token"])


async def run_turns(call: BenchCall, questions: list[Question], out: Results) -> None:
    for index, question in enumerate(questions):
        result = await call.ask(question)
        out.turns.append(result)
        print(turn_line(f"turn {index + 1}", result), flush=True)
        await asyncio.sleep(0.3)


async def run_together(base_url: str, http: aiohttp.ClientSession, args: Args, mark: speech_sets.Mark, out: Results) -> None:
    """`args.concurrent` calls, each asking at once; questions padded so their last voiced samples line up."""
    pool = speech_sets.build(["espeak-voices", "espeak-speeds"], args.rounds * args.concurrent, mark)
    calls = [BenchCall(base_url, await token_for(http, base_url, f"bench-{i}")) for i in range(args.concurrent)]
    await asyncio.gather(*(c.open(http) for c in calls))
    try:
        for round_index in range(args.rounds):
            questions = pool[round_index * args.concurrent : (round_index + 1) * args.concurrent]
            latest = max(q.voiced_end for q in questions)
            asked = [c.ask(q, lead_samples=latest - q.voiced_end) for c, q in zip(calls, questions, strict=True)]
            for result in await asyncio.gather(*asked):
                out.together.append(result)
                print(turn_line(f"x{args.concurrent} r{round_index + 1}", result), flush=True)
            await asyncio.sleep(0.3)
    finally:
        await asyncio.gather(*(c.close(http) for c in calls), return_exceptions=True)


async def run_all(base_url: str, args: Args, questions: list[Question], mark: speech_sets.Mark) -> Results:
    out = Results()
    async with aiohttp.ClientSession() as http:
        call = BenchCall(base_url, await token_for(http, base_url, "bench"), keep_audio=True)
        await call.open(http)
        try:
            await run_turns(call, questions, out)
            await run_barge_ins(call, http, args, mark, out)
        finally:
            await call.close(http)
        if args.concurrent > 0 and args.rounds > 0:
            await run_together(base_url, http, args, mark, out)
    return out


async def run_barge_ins(call: BenchCall, http: aiohttp.ClientSession, args: Args, mark: speech_sets.Mark, out: Results) -> None:
    """Barge-in trials, then the false barge-in checks (skipped with them when --barge-ins is 0)."""
    if args.barge_ins <= 0:
        return
    for index in range(args.barge_ins):
        result = await barge_in_trial(call, http, args.engines, speech_sets.interruption(index, mark), index)
        out.barges.append(result)
        stop = "never" if result.stop_ms is None else f"{result.stop_ms:.0f} ms (wire {result.wire_stop_ms or 0:.0f} ms)"
        print(f"barge-in {index + 1:2d}: bot's last speech {stop} after the user began, interrupted={result.interrupted}", flush=True)
    for name, make in FALSE_CHECKS.items():
        check = await false_barge_in_check(call, http, args.engines, name, make)
        out.checks.append(check)
        print(f"false barge-in check {name!r}: interrupted {check.interrupted}x, bot went on: {check.bot_went_on}", flush=True)


def figures(values: list[float]) -> str:
    p50, p95 = percentile(values, 50), percentile(values, 95)
    return "     -      -" if p50 is None or p95 is None else f"{p50:6.0f} {p95:6.0f}"


def row(label: str, turns: list[TurnResult]) -> str:
    client = [r.client_ms for r in turns if r.client_ms is not None]
    wire = [r.wire_ms for r in turns if r.wire_ms is not None]
    server = [float(r.server_ms) for r in turns if r.server_ms is not None]
    fragments = sum(r.fragment for r in turns)
    missing = sum(r.client_ms is None for r in turns)
    return f"{label:22} {len(turns):3d} {figures(client)}   {figures(wire)}   {figures(server)} {fragments:9d} {missing:8d}"


def report(args: Args, out: Results) -> None:
    print(f"\n{args.engines} engines, end of turn after {args.end_of_turn_ms} ms of silence; times in ms")
    print("voice-to-voice at the client: from sending the question's last voiced sample to the reply's first speech,")
    print("  played: decoded out of aiortc's jitter buffer (it holds 80 ms); wire: that packet's arrival at the client")
    print(f"{'':26} {'client, played':>13}   {'client, wire':>13}   {'server turn_metrics':>13}")
    print(f"{'speech set':22} {'n':>3} {'p50':>6} {'p95':>6}   {'p50':>6} {'p95':>6}   {'p50':>6} {'p95':>6} {'fragments':>9} {'no reply':>8}")
    for name in args.sets:
        print(row(name, [r for r in out.turns if r.question.set_name == name]))
    print(row("all sets", out.turns))
    if out.together:
        print(row(f"{args.concurrent} calls at once", out.together))
    everything = out.turns + out.together
    several = sum(r.replies > 1 for r in everything)
    early = sum(r.early for r in everything)
    print(f"\nfragment replies: {sum(r.fragment for r in everything)} of {len(everything)} questions "
          f"({several} with more than one reply, {early} with reply speech before the question ended)")  # fmt: skip
    if out.barges:
        stops = [b.stop_ms for b in out.barges if b.stop_ms is not None]
        wires = [b.wire_stop_ms for b in out.barges if b.wire_stop_ms is not None]
        p50, p95 = percentile(stops, 50), percentile(stops, 95)
        w50, w95 = percentile(wires, 50), percentile(wires, 95)
        print(f"barge-in, user's first voiced sample -> bot's last speech at the client: n={len(out.barges)} "
              f"played p50 {p50 or 0:.0f} p95 {p95 or 0:.0f} ms, wire p50 {w50 or 0:.0f} p95 {w95 or 0:.0f} ms; "
              f"interrupted {sum(b.interrupted for b in out.barges)}/{len(out.barges)}, "
              f"bot never stopped {len(out.barges) - len(stops)}")  # fmt: skip
    for check in out.checks:
        verdict = "ok" if check.interrupted == 0 and check.bot_went_on else "FALSE BARGE-IN"
        print(f"false barge-in, {check.name:28} interrupted {check.interrupted}x, bot went on {check.bot_went_on}: {verdict}")


def parse() -> Args:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=5, help="questions per speech set")
    parser.add_argument("--end-of-turn-ms", type=int, default=500)
    parser.add_argument("--engines", choices=("offline", "cloud-fakes"), default="offline")
    parser.add_argument("--sets", default=",".join(speech_sets.SETS), help=f"of {', '.join(speech_sets.SETS)}")
    parser.add_argument("--concurrent", type=int, default=4, help="calls talking at once (0: skip)")
    parser.add_argument("--rounds", type=int, default=3, help="questions each concurrent call asks")
    parser.add_argument("--barge-ins", type=int, default=10, help="barge-in trials (0: skip, with the false checks)")
    ns = parser.parse_args()
    sets = [s.strip() for s in ns.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in speech_sets.SETS]
    if unknown:
        parser.error(f"unknown sets {unknown}; known: {', '.join(speech_sets.SETS)}")
    return Args(ns.turns, ns.end_of_turn_ms, ns.engines, sets, ns.concurrent, ns.rounds, ns.barge_ins)


def main() -> None:
    args = parse()
    cloud = args.engines == "cloud-fakes"
    mark = marked if cloud else None
    questions = speech_sets.build(args.sets, args.turns, mark)
    with cloud_fakes(enabled=cloud) as engine_env:
        env = {"PIPELINE": "voice", "END_OF_TURN_MS": str(args.end_of_turn_ms), **engine_env}
        with server_process(**env) as (base_url, _):
            out = asyncio.run(run_all(base_url, args, questions, mark or (lambda s: s)))
    report(args, out)


if __name__ == "__main__":
    main()
