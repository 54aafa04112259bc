"""App config of the example shop."""

from django.apps import AppConfig


class ShopConfig(AppConfig):
    """The shop's views and templates."""

    name = "examples.django_shop.shop"
    label = "shop"
