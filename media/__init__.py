"""The life of a call: peer connection, tracks, pipeline, meters.

Never imports signaling/: a call publishes its events on an EventBus that the WebSocket subscribes to.
"""
