"""The baseline: a stock aiortc echo behind the same three routes the load uses. No auth, no metering.

Each call's received audio track is added back to its own peer connection: aiortc decodes it,
re-encodes it (in its encoder thread) and sends it. Usage: python bench/aiortc_echo_server.py --port P
"""

from __future__ import annotations

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from echo_routes import port_argument, serve_echo  # a sibling: this runs as a script

pcs: dict[str, RTCPeerConnection] = {}


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
    serve_echo(port_argument(__doc__), offer, hangup)


if __name__ == "__main__":
    main()
