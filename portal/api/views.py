"""Base views: every API view is a PortalView, which brings idempotent POSTs and the error format."""

from __future__ import annotations

from typing import Any

from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from portal.api import idempotency
from portal.api.authentication import caller_of


class IdempotentPostMixin:
    """Claims the Idempotency-Key once the caller is known, and stores the final response."""

    _idempotency_reservation: idempotency.Reservation | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        if request.method == "POST":
            caller = caller_of(request)
            identity = caller.idempotency_identity if caller is not None else f"user:{request.user.pk}"
            self._idempotency_reservation = idempotency.reserve(request, identity)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, idempotency.StoredResponse):
            return exc.response
        try:
            return super().handle_exception(exc)  # type: ignore[misc, no-any-return]
        except Exception:
            # Unhandled: the request did not finish, so a retry with the same key must run again.
            if self._idempotency_reservation is not None:
                idempotency.release(self._idempotency_reservation)
                self._idempotency_reservation = None
            raise

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        reservation = self._idempotency_reservation
        if reservation is not None:
            self._idempotency_reservation = None
            idempotency.complete(reservation, self.replayable_response(response))
        return response  # type: ignore[no-any-return]

    def replayable_response(self, response: Response) -> Response:
        """What a retry with the same Idempotency-Key gets back; a view whose answer holds a secret stores less."""
        return response


class PortalView(IdempotentPostMixin, APIView):
    pass


class PortalGenericView(IdempotentPostMixin, generics.GenericAPIView):  # type: ignore[type-arg]
    pass


def validated(serializer_class: type[Serializer], data: object, *, partial: bool = False) -> dict[str, Any]:  # type: ignore[type-arg]
    """Validate input with an input serializer; errors become a problem-details 400."""
    serializer = serializer_class(data=data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
