"""The OpenAPI 3.1 document of an app: paths and methods from its router, each described by its area's module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web

from signaling.openapi import avatar, history, pages, sessions, usage, users, voice
from signaling.openapi.schema import COMPONENTS, Operation

AREAS = (pages, sessions, avatar, usage, history, voice, users)
TAGS = [
    {"name": "sessions", "description": "A user session and its WebRTC call"},
    {"name": "avatar", "description": "The avatar side of a user session"},
    {"name": "history", "description": "Past sessions, their conversations, and text chat"},
    {"name": "voice", "description": "Speech over plain HTTP, outside any call"},
    {"name": "users", "description": "The caller, their preferences, and what they can choose"},
    {"name": "usage", "description": "Metered usage against monthly quotas"},
    {"name": "admin", "description": "Needs the admin role"},
    {"name": "server", "description": "Health, pages, this description and metrics"},
]
INFO = {
    "title": "Voice and avatar media server",
    "version": "1",
    "description": (
        "Realtime voice (and avatar video) calls over WebRTC with an agent. Every /api/v1 route but this "
        "description needs `Authorization: Bearer <JWT>`; every error is JSON `{\"error\": {\"code\", \"message\"}}`."
    ),
}


def documented_operations() -> dict[tuple[str, str], Operation]:
    """Every (method, path) the area modules describe."""
    operations: dict[tuple[str, str], Operation] = {}
    for area in AREAS:
        operations.update(area.OPERATIONS)
    return operations


def app_routes(app: web.Application) -> Iterator[tuple[str, str]]:
    """(method, path template) of every route the app serves; HEAD (aiohttp's twin of GET) and static files aside."""
    for route in app.router.routes():
        resource = route.resource
        if route.method == "HEAD" or resource is None or isinstance(resource, web.StaticResource):
            continue
        yield route.method, resource.canonical


def build_spec(app: web.Application) -> dict[str, Any]:
    described = documented_operations()
    schemas: dict[str, Any] = dict(COMPONENTS["schemas"])
    for area in AREAS:
        schemas.update(getattr(area, "SCHEMAS", {}))
    paths: dict[str, dict[str, Operation]] = {}
    for method, path in app_routes(app):
        operation = described.get((method, path))
        if operation is None:  # tests/test_openapi.py fails on these; the document still lists the route
            operation = {"summary": "(not described yet)", "tags": ["undocumented"], "responses": {"default": {"description": "?"}}}
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": INFO,
        "tags": TAGS,
        "paths": dict(sorted(paths.items())),
        "components": {**COMPONENTS, "schemas": schemas},
        "security": [{"bearerAuth": []}],
    }
