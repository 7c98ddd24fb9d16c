"""`GET /metrics`: what this process counted, in Prometheus' text format (`engine.metrics`),
behind the token as every route but `/healthz`. Left out of the OpenAPI schema, as `/docs` is:
its client is a Prometheus server, not one built from the schema."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from engine import metrics
from engine.api.security import require_token

router = APIRouter(dependencies=[Depends(require_token)])


@router.get("/metrics", include_in_schema=False)
def scrape(request: Request) -> Response:
    """Negotiated on `Accept` as prometheus_client's own server does; 404 from an application
    whose process records nothing (`create_app` without `metrics.enable()`, as in-process tests
    make it)."""
    exposed = metrics.recorder().exposition(request.headers.get("accept", ""))
    if exposed is None:
        raise HTTPException(404, "this process records no metrics")
    body, content_type = exposed
    return Response(body, media_type=content_type)
