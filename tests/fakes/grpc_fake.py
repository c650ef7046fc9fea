"""What every gRPC fake shares: a real grpc.aio server on a free localhost port, and queued faults."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, TypeVar

import grpc

F = TypeVar("F")


class GrpcFake(ABC, Generic[F]):
    """Subclasses name their service and its method handlers; tests queue faults with `inject`."""

    service: str

    def __init__(self) -> None:
        self._faults: list[tuple[F, int | None]] = []  # (fault, calls left; None = every call)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @abstractmethod
    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """The service's methods this fake answers, by name."""

    async def start(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(self.service, self.handlers()),))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    def inject(self, fault: F, times: int | None = 1) -> None:
        """Apply `fault` to the next `times` calls (None: to every call from now on)."""
        self._faults.append((fault, times))

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self) -> F | None:
        if not self._faults:
            return None
        fault, left = self._faults[0]
        if left is not None:
            if left <= 1:
                self._faults.pop(0)
            else:
                self._faults[0] = (fault, left - 1)
        return fault
