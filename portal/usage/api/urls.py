"""Routes of the usage API."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
