"""Voice-to-voice latency: N spoken turns through a real server process over WebRTC.

`--engines offline` (the default): Whisper, the local agent and Piper. `--engines cloud-fakes`: Google STT,
Vertex AI Agent Engine and Google TTS, each pointed at its local fake (tests/fakes/), which answer at once,
so the figure is the server's own overhead around cloud engines.
Prints p50/p95 of each `turn_metrics` field. Usage: python bench/voice_latency.py [--turns 20] [--engines cloud-fakes]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cloud_fakes import cloud_fakes, marked  # noqa: E402
from bench.server_process import server_process  # noqa: E402
from tests.rtc_client import RtcClient  # noqa: E402
from tests.speech import utterance, with_silence  # noqa: E402

QUESTIONS = [
    "Hello, what time is it?",
    "What is the date today?",
    "Good morning!",
    "What time is it now?",
    "Which day is it today?",
    "Hi there, how are you?",
    "Say hello to my friend.",
    "Thank you very much.",
]
FIELDS = ("stt_ms", "agent_first_text_ms", "tts_first_audio_ms", "voice_to_voice_ms")


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


async def run_turns(base_url: str, turns: int, mark: bool) -> list[dict[str, int]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/dev/token", json={"user_id": "bench"}) as resp:
            token = (await resp.json())["access_token"]
        client = RtcClient(base_url, token)
        await client.create_session(http)
        ws = await http.ws_connect(f"{base_url}/api/v1/sessions/{client.session_id}/events?access_token={token}")
        await client.connect(http)
        await client.wait_connected()
        await asyncio.sleep(0.5)
        results: list[dict[str, int]] = []
        for index in range(turns):
            text = QUESTIONS[index % len(QUESTIONS)]
            speech = marked(utterance(text)) if mark else utterance(text)
            client.source.play(with_silence(speech, before_s=0.2, after_s=0.2))
            metrics = None
            async for message in ws:
                event = json.loads(message.data)
                if event["type"] == "turn_metrics":
                    metrics = event
                if event["type"] == "bot_speaking" and not event["speaking"] and metrics is not None:
                    break
                if event["type"] == "error":
                    print("error event:", event, file=sys.stderr)
            assert metrics is not None
            results.append({f: metrics[f] for f in FIELDS})
            print(f"turn {index + 1:2d} {text!r:34} " + " ".join(f"{f}={metrics[f]}" for f in FIELDS), flush=True)
            await asyncio.sleep(0.3)
        await ws.close()
        await client.hangup(http)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--end-of-turn-ms", type=int, default=500)
    parser.add_argument("--engines", choices=("offline", "cloud-fakes"), default="offline")
    args = parser.parse_args()
    cloud = args.engines == "cloud-fakes"
    with cloud_fakes(enabled=cloud) as engine_env:
        env = {"PIPELINE": "voice", "END_OF_TURN_MS": str(args.end_of_turn_ms), **engine_env}
        with server_process(**env) as (base_url, _):
            results = asyncio.run(run_turns(base_url, args.turns, mark=cloud))
    print(f"\n{len(results)} turns, {args.engines} engines, end of turn after {args.end_of_turn_ms} ms of silence")
    print(f"{'field':22} {'p50':>8} {'p95':>8}")
    for field in FIELDS:
        values = [r[field] for r in results]
        print(f"{field:22} {percentile(values, 50):8.0f} {percentile(values, 95):8.0f}")


if __name__ == "__main__":
    main()
