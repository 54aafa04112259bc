"""Tables of the Django database outbox (``TRACKLAYER = {"OUTBOX": "django"}``).

They mirror the core outbox shapes (``OutboxRow``, ``DeliveryLogEntry``, ``PixelPause``) one
field to one column, times as epoch seconds like the core, so ``DjangoOutbox`` is a thin
translation and the admin can show exactly what a sender saw.
"""

from __future__ import annotations

from datetime import datetime, timezone

from django.db import models

from tracklayer_middleware.delivery.outbox import State

STATE_CHOICES = [(s, s.replace("_", " ")) for s in State.ALL]


def _when(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=timezone.utc)


class OutboxEntry(models.Model):
    """One conversion waiting for (or done with) delivery to X; hashes only, never raw PII."""

    pixel_id = models.CharField(max_length=64)
    event = models.CharField(max_length=64)
    event_id = models.CharField(max_length=128)
    conversion_id = models.CharField(max_length=255)
    record = models.JSONField(help_text="Conversion.to_record(): what X needs, hashed.")
    state = models.CharField(max_length=32, choices=STATE_CHOICES, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.FloatField()
    updated_at = models.FloatField()
    first_attempt_at = models.FloatField(null=True, blank=True)
    next_attempt_at = models.FloatField()
    lease_owner = models.CharField(max_length=64, null=True, blank=True)
    lease_until = models.FloatField(null=True, blank=True)
    last_status = models.IntegerField(null=True, blank=True)
    last_code = models.CharField(max_length=128, null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "tracklayer_outbox"
        verbose_name = "conversion"
        verbose_name_plural = "conversions"
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["pixel_id", "event_id", "conversion_id"], name="tracklayer_outbox_once"
            )
        ]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="tracklayer_outbox_due"),
            models.Index(fields=["conversion_id"], name="tracklayer_outbox_cid"),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.conversion_id} ({self.state})"

    @property
    def created(self) -> datetime | None:
        """``created_at`` as an aware datetime (for the admin)."""
        return _when(self.created_at)

    @property
    def next_attempt(self) -> datetime | None:
        """``next_attempt_at`` as an aware datetime (for the admin)."""
        return _when(self.next_attempt_at)


class DeliveryAttempt(models.Model):
    """The delivery log: one row per attempt (identifier names only, never values)."""

    conversion_id = models.CharField(max_length=255)
    event = models.CharField(max_length=64)
    pixel_id = models.CharField(max_length=64)
    attempt = models.PositiveIntegerField()
    state = models.CharField(max_length=32, choices=STATE_CHOICES)
    started_at = models.FloatField()
    finished_at = models.FloatField()
    http_status = models.IntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=128, null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)
    debug_id = models.CharField(max_length=128, null=True, blank=True)
    identifiers = models.JSONField(default=list)
    latency_ms = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = "tracklayer_delivery_log"
        ordering = ["id"]
        indexes = [
            models.Index(fields=["conversion_id"], name="tracklayer_log_cid"),
            models.Index(fields=["pixel_id", "finished_at"], name="tracklayer_log_pixel"),
        ]

    def __str__(self) -> str:
        return f"{self.conversion_id} attempt {self.attempt}: {self.state}"


class PixelHold(models.Model):
    """A pixel whose delivery is on hold (auth failure or X's rate limit)."""

    pixel_id = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=16)
    reason = models.TextField()
    until = models.FloatField()
    since = models.FloatField()
    probes = models.PositiveIntegerField(default=0)
    status = models.IntegerField(null=True, blank=True)
    code = models.CharField(max_length=128, null=True, blank=True)

    class Meta:
        db_table = "tracklayer_pixel_pause"

    def __str__(self) -> str:
        return f"pixel {self.pixel_id} paused ({self.kind})"
