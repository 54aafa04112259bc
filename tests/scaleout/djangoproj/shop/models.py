from django.db import models


class Order(models.Model):
    """The host app's own record, committed (or not) together with its conversion."""

    number = models.CharField(max_length=32, unique=True)

    class Meta:
        app_label = "shop"
