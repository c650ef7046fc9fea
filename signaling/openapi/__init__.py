"""The API's OpenAPI 3.1 description: one module per route area, assembled from the app's router (spec.py)."""

from signaling.openapi.routes import install_openapi
from signaling.openapi.spec import build_spec

__all__ = ["build_spec", "install_openapi"]
