"""Engines behind small interfaces: speech-to-text, agent, text-to-speech, avatar.

Nothing here knows WebRTC or HTTP; the media pipeline drives these engines.
"""
