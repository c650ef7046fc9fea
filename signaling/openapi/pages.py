"""Health, readiness, the page, the dev token, and this description itself with its docs and metrics."""

from __future__ import annotations

from signaling.openapi.schema import STRING, json_content, obj, operation

TAG = "server"
_HTML = {"text/html": {"schema": STRING}}

OPERATIONS = {
    ("GET", "/healthz"): operation(
        "Liveness: the process answers", tag=TAG, auth=None,
        ok={200: ("alive", json_content(obj({"status": {"const": "ok"}})))},
    ),
    ("GET", "/readyz"): operation(
        "Readiness: not draining and the database answers", tag=TAG, auth=None,
        ok={200: ("ready", json_content(obj({"status": {"const": "ready"}})))},
        errors={503: "draining, not_ready"},
    ),
    ("GET", "/"): operation("The browser page", tag=TAG, auth=None, ok={200: ("the page", _HTML)}),
    ("POST", "/dev/token"): operation(
        "DEV_MODE only: an access token for any user name", tag=TAG, auth=None,
        body=obj({"user_id": {"type": "string", "minLength": 1, "maxLength": 255}}, required=[]),
        body_required=False,
        ok={200: ("a 12-hour token", json_content(obj({"access_token": STRING, "user_id": STRING})))},
        errors={400: "invalid_user"},
    ),
    ("GET", "/api/v1/openapi.json"): operation(
        "This OpenAPI 3.1 description", tag=TAG, auth=None,
        ok={200: ("the description", json_content({"type": "object", "required": ["openapi", "paths"]}))},
        errors={429: "rate_limited (it is under /api/v1)"},
    ),
    ("GET", "/docs"): operation(
        "The API's documentation page (renders /api/v1/openapi.json)", tag=TAG, auth=None,
        ok={200: ("the page", _HTML)},
    ),
    ("GET", "/metrics"): operation(
        "Prometheus metrics (text exposition format)", tag=TAG, auth="metrics",
        ok={200: ("the metrics", {"text/plain": {"schema": STRING}})},
        errors={401: "unauthorized (METRICS_TOKEN is set and was not sent)"},
    ),
}
