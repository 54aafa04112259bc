"""URLs of the example shop."""

from django.urls import include, path

urlpatterns = [path("", include("examples.django_shop.shop.urls"))]
