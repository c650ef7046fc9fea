"""Access log lines without query strings: the WebSocket carries its access token there."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from signaling.http_protocol import JsonErrorAppRunner


class PathOnlyAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %s %.1fms',
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time * 1000,
        )


def make_runner(app: web.Application, *, shutdown_timeout: float = 5.0) -> web.AppRunner:
    return JsonErrorAppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        access_log_class=PathOnlyAccessLogger,
        access_log=logging.getLogger("aiohttp.access"),
    )
