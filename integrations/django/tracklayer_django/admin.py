"""The Django database outbox in the admin: what waits, what failed, and a "retry" action.

Rows are read-only here (the sender owns them); the one write is the "retry" action, which
gives the selected dead or paused conversions a fresh start through the outbox itself, so the
admin and ``tracklayer retry-dead`` behave the same.
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from tracklayer_middleware.delivery.outbox import State

from .models import DeliveryAttempt, OutboxEntry, PixelHold
from .outbox import DjangoOutbox


class _ReadOnly(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(OutboxEntry)
class OutboxEntryAdmin(_ReadOnly):
    """Conversions in the outbox: filter by state and event, retry the dead ones."""

    list_display = ("conversion_id", "event", "pixel_id", "state", "attempts", "created",
                    "next_attempt", "last_status", "last_code")
    list_filter = ("state", "event", "pixel_id")
    search_fields = ("conversion_id",)
    actions = ("retry",)

    @admin.action(description="Retry selected dead conversions (resumes paused pixels)")
    def retry(self, request: HttpRequest, queryset: QuerySet[OutboxEntry]) -> None:
        """Dead rows get a fresh attempt budget; a selected paused row resumes its pixel."""
        outbox = DjangoOutbox()
        now = time.time()
        dead = list(queryset.filter(state=State.DEAD).values_list("conversion_id", flat=True))
        revived = outbox.retry_dead(now=now, conversion_ids=dead) if dead else 0
        paused = set(queryset.filter(state=State.PAUSED).values_list("pixel_id", flat=True))
        resumed = sum(outbox.resume(pixel, now=now) for pixel in paused)
        self.message_user(
            request,
            f"{revived} dead conversion(s) will be sent again; {len(paused)} paused pixel(s) "
            f"resumed ({resumed} conversion(s)). Other states were left alone.",
            messages.SUCCESS if revived or resumed else messages.WARNING,
        )


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(_ReadOnly):
    """The delivery log: one row per attempt (identifier names only)."""

    list_display = ("conversion_id", "event", "pixel_id", "attempt", "state", "http_status",
                    "error_code", "latency_ms")
    list_filter = ("state", "event", "http_status")
    search_fields = ("conversion_id",)


@admin.register(PixelHold)
class PixelHoldAdmin(_ReadOnly):
    """Pixels whose delivery is on hold, and why."""

    list_display = ("pixel_id", "kind", "reason", "status", "code", "probes")
