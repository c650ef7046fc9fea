"""What every Google engine shares: the endpoint setting, GOOGLE_API_INSECURE, ADC and the gRPC channel.

Application Default Credentials are loaded once per process, on a worker thread: `google.auth.default`
reads files and may ask the metadata server, which can block for seconds. Token refreshes later run on
gRPC's own plugin threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from agent_bridge.interfaces import EngineError

if TYPE_CHECKING:
    import grpc.aio
    from google.auth.credentials import Credentials

INSECURE_SETTING = "GOOGLE_API_INSECURE"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

_log = logging.getLogger(__name__)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_ENDPOINT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$")


def insecure_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """GOOGLE_API_INSECURE: plaintext gRPC and no credentials, for local fakes only."""
    raw = environ.get(INSECURE_SETTING, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{INSECURE_SETTING} must be 1 or 0, got {environ.get(INSECURE_SETTING)!r}")


def check_endpoint(value: str, setting: str) -> str:
    """A `host:port` endpoint as gRPC takes it; anything else fails naming `setting`."""
    match = _ENDPOINT.match(value.strip())
    if match is None or not 0 < int(match.group(1)) < 65536:
        raise ValueError(f"{setting} must be host:port, got {value!r}")
    return value.strip()


def grpc_channel_options() -> list[tuple[str, int]]:
    """Options of every channel to a Google speech service."""
    return [
        # A whole reply as one LINEAR16 WAV can exceed gRPC's 4 MB default (5,000 bytes of text ~ 14 MB).
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
        # A connection that died silently (a NAT timeout) is noticed by a ping, not by a call's deadline.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]


@dataclass(frozen=True)
class DefaultCredentials:
    credentials: Credentials
    project_id: str | None  # the project ADC names, if any (some APIs need it in resource names)


_adc: DefaultCredentials | None = None
_adc_lock = threading.Lock()


def _load_adc(scopes: Sequence[str]) -> DefaultCredentials:
    global _adc
    with _adc_lock:  # two engines warming up together load the credentials once
        if _adc is None:
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError

            try:
                credentials, project_id = google.auth.default(scopes=list(scopes))
            except DefaultCredentialsError as exc:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ValueError(
                    "no Google Application Default Credentials (set GOOGLE_APPLICATION_CREDENTIALS or run "
                    f"`gcloud auth application-default login`): {first_line}"
                ) from None
            _adc = DefaultCredentials(credentials, project_id)
        return _adc


async def application_default_credentials(scopes: Sequence[str] = (CLOUD_PLATFORM_SCOPE,)) -> DefaultCredentials:
    """The process's ADC, loaded on a worker thread the first time; a ValueError if there are none.

    Loaded once for every engine, with the first caller's scopes (all of ours use cloud-platform).
    """
    if _adc is not None:
        return _adc
    return await asyncio.to_thread(_load_adc, tuple(scopes))


async def open_channel(endpoint: str, *, insecure: bool, engine: str) -> grpc.aio.Channel:
    """A gRPC channel to `endpoint`: TLS with ADC, or plaintext without credentials when `insecure`.

    Call it on the event loop that will use the channel (grpc.aio channels belong to one loop).
    """
    import grpc
    import grpc.aio

    if insecure:
        _log.warning(
            "%s=1: %s talks plaintext gRPC to %s without credentials; for local fakes only",
            INSECURE_SETTING, engine, endpoint,
        )
        return grpc.aio.insecure_channel(endpoint, options=grpc_channel_options())
    from google.auth.transport.grpc import AuthMetadataPlugin
    from google.auth.transport.requests import Request

    adc = await application_default_credentials()
    call_credentials = grpc.metadata_call_credentials(AuthMetadataPlugin(adc.credentials, Request()))
    channel_credentials = grpc.composite_channel_credentials(grpc.ssl_channel_credentials(), call_credentials)
    return grpc.aio.secure_channel(endpoint, channel_credentials, options=grpc_channel_options())


C = TypeVar("C")


class SharedClient(Generic[C]):
    """One engine's gRPC client on one channel for the whole process, opened once on first use.

    Every caller waits on the same opening (shielded, so one cancelled caller does not cancel it for
    the others); a failed opening is tried again by the next caller; `aclose` closes the channel.
    """

    def __init__(self, endpoint: str, *, insecure: bool, engine: str, make_client: Callable[[grpc.aio.Channel], C]) -> None:
        self._endpoint = endpoint
        self._insecure = insecure
        self._engine = engine
        self._make_client = make_client
        self._channel: grpc.aio.Channel | None = None
        self._client: C | None = None
        self._opening: asyncio.Future[None] | None = None
        self.closed = False

    def check_open(self) -> None:
        if self.closed:
            raise EngineError(self._engine, "engine is closed")

    async def get(self) -> C:
        self.check_open()
        if self._client is None:
            if self._opening is None:
                self._opening = asyncio.ensure_future(self._open())
            try:
                await asyncio.shield(self._opening)
            except Exception:
                self._opening = None  # the next caller tries again
                raise
            self.check_open()  # closed while the channel was opening
        assert self._client is not None
        return self._client

    async def _open(self) -> None:
        channel = await open_channel(self._endpoint, insecure=self._insecure, engine=self._engine)
        if self.closed:
            await channel.close()
            return
        self._channel, self._client = channel, self._make_client(channel)

    async def aclose(self) -> None:
        self.closed = True
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        channel, self._channel, self._client = self._channel, None, None
        if channel is not None:
            await channel.close()
