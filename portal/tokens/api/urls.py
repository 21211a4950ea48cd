"""Routes of API tokens."""

from django.urls import path

from portal.tokens.api import views

urlpatterns = [
    path("tokens", views.TokenListView.as_view(), name="token-list"),
    path("tokens/<int:token_id>", views.TokenDetailView.as_view(), name="token-detail"),
]
