"""JSON errors even for requests aiohttp cannot parse (a header or URL past its size limit, bad framing).

Such a request never reaches a route or middleware: aiohttp answers it from its connection handler,
in plain text, and logs a traceback at ERROR level, which lets any client flood the log. Here that
answer is our JSON error and the log line is one short warning. This subclasses aiohttp's
connection handler, so it is kept to the one method aiohttp documents as the error hook.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger(__name__)


class _JsonErrorHandler(RequestHandler):
    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        log.warning("unparseable request from %s: %s", request.remote, type(exc).__name__ if exc else status)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent on this connection")
        body = {"error": {"code": "bad_request", "message": "the HTTP request is malformed or a header or URL is too long"}}
        response = web.Response(status=status, text=json.dumps(body), content_type="application/json")
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorAppRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # same object, one overridden factory method
        return server
