"""Idempotency-Key on POST: the first successful response is stored and replayed; a different body is refused.

Only 2xx responses are remembered. A refusal (4xx) changed nothing, by the API's rule, so remembering it would
protect nothing and would replay the same refusal to a client retrying after fixing the cause (a freed quota, a
corrected name); a server error (5xx) may be transient. Either way the key is released and a retry runs again,
as Stripe treats validation failures and conflicts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api.models import IdempotencyRecord

HEADER = "HTTP_IDEMPOTENCY_KEY"
MAX_KEY_LENGTH = 255
# A record still unfinished after this long belongs to a request that died; a retry may take it over.
ABANDONED_AFTER = timedelta(minutes=10)
REPLAY_HEADER = "Idempotent-Replayed"


class KeyReusedWithDifferentRequest(exceptions.APIException):
    status_code = 422
    title = "Idempotency key reused"
    default_detail = "This Idempotency-Key was already used with a different request"
    default_code = "idempotency_key_reused"


class KeyInUse(exceptions.APIException):
    status_code = 409
    title = "Request in progress"
    default_detail = "A request with this Idempotency-Key is still being processed; retry shortly"
    default_code = "idempotency_key_in_use"


class InvalidKey(exceptions.APIException):
    status_code = 400
    title = "Invalid Idempotency-Key"
    default_detail = f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
    default_code = "invalid_idempotency_key"


@dataclass
class Reservation:
    record_id: int


class StoredResponse(Exception):
    """Raised to short-circuit the view with the response stored for this key."""

    def __init__(self, response: Response) -> None:
        super().__init__("replay")
        self.response = response


def request_fingerprint(request: Request) -> str:
    """Method, path and the body as canonical JSON (keys sorted, no insignificant whitespace): the same request
    serialized by another client library, keys in another order, is the same request. A body that is not JSON is
    compared byte for byte (the view refuses it anyway)."""
    digest = hashlib.sha256()
    digest.update(request.method.encode() if request.method else b"")
    digest.update(b"\0")
    digest.update(request.path.encode())
    digest.update(b"\0")
    digest.update(_canonical(request._request.body))
    return digest.hexdigest()


def _canonical(body: bytes) -> bytes:
    try:
        document = json.loads(body) if body else None
    except (ValueError, RecursionError):
        return body
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def reserve(request: Request, identity: str) -> Reservation | None:
    """Claim the key for this request, or raise StoredResponse / a conflict for a retry."""
    key = request.META.get(HEADER)
    if key is None:
        return None
    if not (0 < len(key) <= MAX_KEY_LENGTH) or not key.isascii() or not key.isprintable():
        raise InvalidKey()
    fingerprint = request_fingerprint(request)
    for _ in range(2):
        try:
            # Its own transaction, committed now: a concurrent duplicate sees it and does not execute.
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    principal_key=identity,
                    key=key,
                    method=request.method or "",
                    path=request.path[:2048],
                    request_hash=fingerprint,
                )
            return Reservation(record_id=record.pk)
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(principal_key=identity, key=key).first()
            if existing is None:
                continue  # purged between our insert and read: try again
            if existing.request_hash != fingerprint:
                raise KeyReusedWithDifferentRequest() from None
            if existing.completed_at is not None:
                raise StoredResponse(_replay(existing)) from None
            if timezone.now() - existing.created_at > ABANDONED_AFTER:
                IdempotencyRecord.objects.filter(pk=existing.pk, completed_at__isnull=True).delete()
                continue
            raise KeyInUse() from None
    raise KeyInUse()


def _replay(record: IdempotencyRecord) -> Response:
    response = Response(status=record.response_status)
    response.content = bytes(record.response_body or b"")  # type: ignore[assignment]
    response["Content-Type"] = record.response_content_type
    for name, value in record.response_headers.items():
        response[name] = value
    response[REPLAY_HEADER] = "true"
    response._is_rendered = True  # type: ignore[attr-defined]
    return response


_KEPT_HEADERS = ("Location", "Retry-After")


def complete(reservation: Reservation, response: Response) -> None:
    """Store a successful response for replay; any other releases the key so a retry runs again."""
    if not 200 <= response.status_code < 300:
        IdempotencyRecord.objects.filter(pk=reservation.record_id).delete()
        return
    if not getattr(response, "is_rendered", True):
        response.render()
    IdempotencyRecord.objects.filter(pk=reservation.record_id).update(
        completed_at=timezone.now(),
        response_status=response.status_code,
        response_body=bytes(response.content),
        response_content_type=response.get("Content-Type", ""),
        response_headers={name: response[name] for name in _KEPT_HEADERS if response.has_header(name)},
    )


def release(reservation: Reservation) -> None:
    IdempotencyRecord.objects.filter(pk=reservation.record_id).delete()
