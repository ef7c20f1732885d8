"""Django views of the tracking endpoints.

`/c/` and `/o/` are served by tracking.hotpath as plain WSGI in production (see
clickmap/wsgi.py); these adapters serve them where Django handles the request
itself (test client, live test server) with the very same code.
"""

from django.http import HttpResponse, HttpResponseNotFound
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from tracking import hotpath
from tracking.tokens import UnsubscribeToken, verify_token
from tracking.unsubscribe import delivery_for, unsubscribe


def _wsgi_response(handler, request, token):
    captured = {}

    def start_response(status, headers):
        captured["status"], captured["headers"] = status, headers

    answer = handler(request.META, start_response, token)
    body = b"".join(answer)
    if hasattr(answer, "close"):
        answer.close()  # as a WSGI server does once the body is out: inline ingestion
    response = HttpResponse(body, status=int(captured["status"].split()[0]))
    for name, value in captured["headers"]:
        if name.lower() != "content-length":
            response[name] = value
    return response


@csrf_exempt  # link checkers POST here too: answered, never refused, not recorded
def click(request, token):
    return _wsgi_response(hotpath.click, request, token)


@csrf_exempt
def open_pixel(request, token):
    return _wsgi_response(hotpath.open_pixel, request, token)


@csrf_exempt  # mail clients POST here (RFC 8058) with no session or CSRF token
def unsubscribe_view(request, token):
    """GET: a confirmation page. POST: unsubscribe (one-click or the page's button)."""
    parsed = verify_token(token)
    delivery = delivery_for(parsed.delivery_id) if isinstance(parsed, UnsubscribeToken) else None
    if delivery is None:
        return HttpResponseNotFound(hotpath.NOT_FOUND)
    if request.method == "POST":
        one_click = request.POST.get("List-Unsubscribe") == "One-Click"
        unsubscribe(delivery, "one_click" if one_click else "page")
        if one_click:
            return HttpResponse("Unsubscribed.", content_type="text/plain")
        return render(request, "tracking/unsubscribed.html", {"delivery": delivery})
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    done = delivery.customer.unsubscribed_at is not None
    template = "tracking/unsubscribed.html" if done else "tracking/unsubscribe.html"
    return render(request, template, {"delivery": delivery})
