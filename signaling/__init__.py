"""The aiohttp signalling server: HTTP offer/answer, trickle ICE, a WebSocket of call events."""
