"""The baseline: a stock aiortc echo behind the same three routes the load uses. No auth, no metering.

Each call's received audio track is added back to its own peer connection: aiortc decodes it,
re-encodes it (in its encoder thread) and sends it. Usage: python bench/aiortc_echo_server.py --port P
"""

from __future__ import annotations

import argparse
import uuid

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

pcs: dict[str, RTCPeerConnection] = {}


async def create(request: web.Request) -> web.Response:
    return web.json_response({"session_id": uuid.uuid4().hex}, status=201)


async def offer(request: web.Request) -> web.Response:
    body = await request.json()
    pc = pcs[request.match_info["id"]] = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.on("track", lambda track: pc.addTrack(track))  # the echo: what comes in goes back out
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
    await pc.setLocalDescription(await pc.createAnswer())  # gathers fully: the answer has the candidates
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


async def hangup(request: web.Request) -> web.Response:
    pc = pcs.pop(request.match_info["id"], None)
    if pc is not None:
        await pc.close()
    return web.json_response({"status": "ended"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    app = web.Application()
    app.add_routes([web.post("/api/v1/sessions", create), web.post("/api/v1/sessions/{id}/offer", offer),
                    web.delete("/api/v1/sessions/{id}", hangup)])  # fmt: skip
    web.run_app(app, host="127.0.0.1", port=port, print=lambda _: print(f"Serving on http://127.0.0.1:{port}", flush=True))


if __name__ == "__main__":
    main()
