"""URLs of the shop app."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.landing, name="landing"),
    path("pricing/", views.pricing, name="pricing"),
    path("lead/", views.lead, name="lead"),
    path("checkout/", views.checkout, name="checkout"),
]
