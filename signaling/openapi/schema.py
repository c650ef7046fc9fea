"""Small builders for OpenAPI 3.1 pieces, so each route's description reads like its shape."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]
Operation = dict[str, Any]
ERROR_REF = {"$ref": "#/components/schemas/Error"}

# What every /api/v1 route may answer before its handler runs or whatever it does (signaling/errors.py,
# signaling/rate_limit.py): an unreadable token, too many requests, the database away.
_API_ERRORS = {
    401: "unauthorized, invalid_token, token_expired",
    429: "rate_limited",
    503: "database_unavailable",
}


def obj(properties: dict[str, Schema], *, required: list[str] | tuple[str, ...] | None = None, **extra: Any) -> Schema:
    """An object; every property is required unless `required` names fewer (more fields may come)."""
    names = list(properties) if required is None else list(required)
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if names:
        schema["required"] = names
    return schema


def nullable(schema: Schema) -> Schema:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


STRING: Schema = {"type": "string"}
NUMBER: Schema = {"type": "number"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
UUID: Schema = {"type": "string", "format": "uuid"}
DATE_TIME: Schema = {"type": "string", "format": "date-time"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def path_param(name: str, description: str, schema: Schema = STRING) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def query_param(name: str, description: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def operation(
    summary: str,
    *,
    tag: str,
    ok: dict[int, tuple[str, dict[str, Any] | None]],
    errors: dict[int, str] | None = None,
    params: list[dict[str, Any]] | None = None,
    body: Schema | None = None,
    body_required: bool = True,
    body_content: dict[str, Any] | None = None,
    auth: str | None = "bearer",
    description: str | None = None,
) -> Operation:
    """One operation. `ok`: status -> (description, content or None); `errors`: status -> the error codes.

    auth: "bearer" (a user's JWT; adds 401, 429 and 503), None (public), or "metrics" (METRICS_TOKEN).
    """
    op: Operation = {"summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    all_errors: dict[int, str] = {}
    if auth == "bearer":
        all_errors.update(_API_ERRORS)
    if body is not None or body_content is not None:
        op["requestBody"] = {"required": body_required, "content": body_content or json_content(body or {})}
        all_errors[413] = "body_too_large"
        if body_content is None:  # a JSON body (signaling/errors.py read_json)
            all_errors[400] = "invalid_json, invalid_characters (a NUL, which Postgres cannot store)"
    for status, codes in (errors or {}).items():
        all_errors[status] = ", ".join(c for c in (all_errors.get(status), codes) if c)
    responses: dict[str, Any] = {}
    for status, (text, content) in ok.items():
        responses[str(status)] = {"description": text, **({"content": content} if content else {})}
    for status, codes in sorted(all_errors.items()):
        responses[str(status)] = {"description": f"error codes: {codes}", "content": json_content(ERROR_REF)}
    op["responses"] = responses
    if auth is None:
        op["security"] = []
    elif auth == "metrics":
        op["security"] = [{}, {"metricsToken": []}]  # only when METRICS_TOKEN is set
    return op


COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "Supabase-style HS256 access token"},
        "metricsToken": {"type": "http", "scheme": "bearer", "description": "METRICS_TOKEN, when the server sets one"},
    },
    "schemas": {
        "Error": obj(
            {"error": obj({"code": STRING, "message": STRING})},
            description='Every error: {"error": {"code", "message"}}',
        ),
    },
}
