"""ASGI entry point of the example shop.

``uvicorn examples.django_shop.shop_project.asgi:application`` serves it with async views.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_shop.shop_project.settings")
application = get_asgi_application()
