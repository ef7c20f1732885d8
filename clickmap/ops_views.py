"""The operator's endpoints: /healthz, /healthz/pipeline and /metrics.

`OpsEndpointsMiddleware` answers them before host validation and the HTTPS redirect:
a container's health probe asks for 127.0.0.1, Prometheus for the service's internal
name, neither of which is a public host name, and neither speaks TLS. They build no
URL from the Host header, so nothing depends on it. They are also in the URL
configuration, under the names healthz, healthz-pipeline and metrics.
"""

import hmac

from django.conf import settings
from django.http import Http404, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST

from clickmap import pipeline_health, telemetry

NO_STORE = {"Cache-Control": "no-store"}


def _json(status: int, body: dict) -> JsonResponse:
    return JsonResponse(body, status=status, headers=NO_STORE)


def healthz(request):
    """The web (SERVICE_ROLE=web): the database and the cache. The tracker: its spool
    takes events; it never touches the database. 200, or 503 with the reasons (JSON)."""
    if settings.SERVICE_ROLE == "tracker":
        checks = pipeline_health.tracker_checks()
    else:
        checks = pipeline_health.web_checks()
    status, body = pipeline_health.respond(checks)
    return _json(status, {"role": settings.SERVICE_ROLE} | body)


def healthz_pipeline(request):
    """Ingestion and aggregation: backlogs and lags, the last aggregation run, beat's and
    the workers' heartbeats, each against its threshold. Web only (it reads the
    database); the tracker answers 404."""
    if settings.SERVICE_ROLE == "tracker":
        raise Http404("The pipeline's health is the web's to tell.")
    try:
        checks = pipeline_health.pipeline_checks(pipeline_health.pipeline_state())
    except Exception as error:  # the database or Redis is away: that is the answer
        checks = [pipeline_health.Check("state", False, pipeline_health._error(error))]
    return _json(*pipeline_health.respond(checks))


def metrics(request):
    """Prometheus text format, for `Authorization: Bearer <METRICS_TOKEN>`; 403 without
    it, 404 when no token is configured (the endpoint is off) and on the tracker."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("Metrics are off: set METRICS_TOKEN.")
    if settings.SERVICE_ROLE == "tracker":  # the scrape reads the database: the web's
        raise Http404("Scrape the web: it adds up every process's metrics.")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return HttpResponse("A valid bearer token is needed.\n", status=403, headers=NO_STORE)
    return HttpResponse(telemetry.scrape(), content_type=CONTENT_TYPE_LATEST, headers=NO_STORE)


ENDPOINTS = {
    "/healthz": (healthz, "health"),
    "/healthz/pipeline": (healthz_pipeline, "health"),
    "/metrics": (metrics, "metrics"),
}


class OpsEndpointsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        endpoint = ENDPOINTS.get(request.path_info)
        if endpoint is None:
            return self.get_response(request)
        view, request.route_group = endpoint
        try:
            return view(request)
        except Http404 as error:
            return HttpResponse(f"{error}\n", status=404, content_type="text/plain")
