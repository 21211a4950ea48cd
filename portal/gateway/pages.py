"""The browser page behind a one-time reveal link: what Backstage's task output links to.

A browser opening the link has no portal identity, so the link itself is the credential (like a password-reset
link). GET only describes what the link is for; the key is shown on an explicit POST from that page, so link
previews and prefetchers never use it up. No CSRF token: a cross-site POST needs the link's secret, and whoever
has it can reveal anyway.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from portal.core.errors import NotFound
from portal.gateway import services

NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


@csrf_exempt
@require_http_methods(["GET", "POST"])
def reveal_page(request: HttpRequest, token: str) -> HttpResponse:
    try:
        if request.method == "POST":
            credential, key = services.credential_reveal_by_link(token=token)
            context = {"state": "revealed", "credential": credential, "key": key}
            status = 200
        else:
            reveal = services.credential_reveal_preview(token=token)
            used = reveal.revealed_at is not None
            context = {"state": "used" if used else "ready", "credential": reveal.credential, "reveal": reveal}
            status = 410 if used else 200
    except NotFound:
        context, status = {"state": "unknown"}, 404
    except services.RevealGone as gone:
        context, status = {"state": "gone", "reason": gone.detail}, 410
    response = render(request, "gateway/reveal.html", context, status=status)
    for name, value in NO_STORE.items():
        response[name] = value
    return response
