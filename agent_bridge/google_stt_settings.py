"""The settings of Google Speech-to-Text (STT_ENGINE=google), checked once at start.

Every failure is a ValueError of one line naming the variable, like the rest of EngineConfig.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.cloud.speech_v2.types import cloud_speech

from agent_bridge.config import EngineConfig
from agent_bridge.google_auth import check_endpoint
from agent_bridge.google_stt_audio import SAMPLE_RATE

GLOBAL = "global"
_PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]*[a-z0-9]")  # ids, numbers and legacy "domain.com:id" ids
_LOCATION = re.compile(r"[a-z][a-z0-9-]*[a-z0-9]")
_RECOGNIZER = re.compile(r"projects/([^/\s]+)/locations/([^/\s]+)/recognizers/([^/\s]+)")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LANGUAGE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")  # a BCP-47 tag (or "auto")


@dataclass(frozen=True)
class GoogleSpeechSettings:
    project: str
    location: str
    recognizer: str  # projects/{project}/locations/{location}/recognizers/{id}; "_" is the implicit one
    model: str
    language: str
    endpoint: str  # host:port
    insecure: bool = False  # plaintext gRPC without credentials, for local fakes only

    @classmethod
    def from_config(cls, config: EngineConfig) -> GoogleSpeechSettings:
        project = config.google_cloud_project
        if not project:
            raise ValueError("GOOGLE_CLOUD_PROJECT must be set for STT_ENGINE=google")
        if not _PROJECT.fullmatch(project):
            raise ValueError(f"GOOGLE_CLOUD_PROJECT is not a project id: {project!r}")
        location = _location(config)
        recognizer = config.google_speech_recognizer or f"projects/{project}/locations/{location}/recognizers/_"
        model = config.google_speech_model
        if not _MODEL.fullmatch(model):
            raise ValueError(f"GOOGLE_SPEECH_MODEL is not a model name: {model!r}")
        language = config.google_speech_language
        if not _LANGUAGE.fullmatch(language):
            raise ValueError(f"GOOGLE_SPEECH_LANGUAGE must be one BCP-47 language tag such as en-US, got {language!r}")
        endpoint = config.google_speech_endpoint
        if endpoint is None:
            endpoint = "speech.googleapis.com:443" if location == GLOBAL else f"{location}-speech.googleapis.com:443"
        else:
            endpoint = check_endpoint(endpoint, "GOOGLE_SPEECH_ENDPOINT")
        return cls(project, location, recognizer, model, language, endpoint, config.google_api_insecure)

    def config_request(self) -> cloud_speech.StreamingRecognizeRequest:
        """A stream's first message: the recognizer and the whole config, decoding stated explicitly."""
        decoding = cloud_speech.ExplicitDecodingConfig(
            encoding=cloud_speech.ExplicitDecodingConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=SAMPLE_RATE,
            audio_channel_count=1,
        )
        config = cloud_speech.RecognitionConfig(
            explicit_decoding_config=decoding, model=self.model, language_codes=[self.language]
        )
        return cloud_speech.StreamingRecognizeRequest(
            recognizer=self.recognizer,
            streaming_config=cloud_speech.StreamingRecognitionConfig(
                config=config,
                streaming_features=cloud_speech.StreamingRecognitionFeatures(interim_results=True),
            ),
        )


def _location(config: EngineConfig) -> str:
    """GOOGLE_SPEECH_LOCATION, else the recognizer's own location, else global; the two must agree."""
    location = config.google_speech_location
    if location is not None and not _LOCATION.fullmatch(location):
        raise ValueError(f"GOOGLE_SPEECH_LOCATION is not a location such as global or us-central1: {location!r}")
    recognizer = config.google_speech_recognizer
    if recognizer is None:
        return location or GLOBAL
    match = _RECOGNIZER.fullmatch(recognizer)
    if match is None:
        raise ValueError(
            f"GOOGLE_SPEECH_RECOGNIZER must be projects/PROJECT/locations/LOCATION/recognizers/ID, got {recognizer!r}"
        )
    named = match.group(2)
    if location is not None and location != named:
        # A recognizer is served only from its own location's endpoint: the service would refuse the stream.
        raise ValueError(
            f"GOOGLE_SPEECH_RECOGNIZER is in location {named!r} but GOOGLE_SPEECH_LOCATION is {location!r}"
        )
    return named
